"""The metadata every delivery adapter attaches to a message, defined once.

The send loop puts these keys on each :class:`~relmail.delivery.base.OutgoingMessage`;
each adapter carries them the way its provider allows (SendGrid
``custom_args``, Mailgun ``v:`` variables, Postmark ``Metadata``, SES
message tags, Mailjet ``EventPayload``, Brevo ``X-Mailin-custom``, Mandrill
``X-MC-Metadata``), and each feedback provider reads them back from the events,
so that a bounce or a complaint finds its (customer, run, message) again.
"""

from __future__ import annotations

CUSTOMER = "relmail_customer"
RUN = "relmail_run"
MESSAGE = "relmail_message"

#: Every key, in the order adapters attach them.
KEYS = (CUSTOMER, RUN, MESSAGE)

#: The header carrying the Message-ID relmail rendered, for a provider that writes its own Message-ID
#: (Mailjet): a bounce that returns the e-mail's headers names the delivery by it (``deliveries.rfc_message_id``).
MESSAGE_ID_HEADER = "X-Relmail-Message-ID"


def metadata(customer_id: str, run_id: str, message_id: str) -> dict[str, str]:
    """The metadata of one e-mail: which customer, run and message it is."""
    return {CUSTOMER: customer_id, RUN: run_id, MESSAGE: message_id}
