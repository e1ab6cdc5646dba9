"""Campaign files (``campaigns/*.yml``) → :class:`Campaign`, :class:`Message`, :class:`Policy`.

A campaign names one or more messages and the policy that decides who gets
them. The policy is set once for the campaign; a message may override the
parts that make sense per message (its relevance threshold, topic cap,
hold-out share, contact cost, rules ...). Every error names the file, the
line and the key (``campaigns/weekly.yml:14: field 'messages.2.offer'``).

Example (the demo campaign is a longer one)::

    title: Weekly mail
    policy:
      min_relevance: 0.3
      frequency_cap: {7d: 2, 30d: 6}
      topic_frequency_cap: {7d: 1}
      holdout_share: 0.1
      max_messages_per_run: 1
      rules: {FATIGUE: false}
    scoring:
      weights: {consent: 1, affinity: 2, usage: 2, engagement: 1, recency: 1}
    messages:
      - id: ebike-launch
        template: ebike_launch
        subject: "Meet the E-bike Stad 200"
        topic: promotions
        segments: [cyclists]
        products: [EB-200]
        offer: promotion
        priority: 2
        value: 40
"""

from .model import CAP_WINDOWS, OFFERS, Campaign, Message, Policy, Scoring
from .parse import campaign_path, declared_messages, load_campaign, load_campaigns, missing_templates, missing_templates_error, parse_campaign

__all__ = ["CAP_WINDOWS", "OFFERS", "Campaign", "Message", "Policy", "Scoring", "campaign_path", "declared_messages",
           "load_campaign", "load_campaigns", "missing_templates", "missing_templates_error", "parse_campaign"]
