"""``relmail adapters list``: the delivery adapters and which one the project uses."""

from __future__ import annotations

import sys

import click

from ._common import echo_json, echo_table, json_option, pass_state


@click.group("adapters")
def adapters() -> None:
    """Delivery adapters (SMTP, ESPs, file outbox)."""


@adapters.command("list")
@json_option
@pass_state
def list_adapters(state, as_json: bool) -> None:
    """List the delivery adapters, their batch limits and settings; mark the one relmail.toml selects.

    \b
    Example:
      relmail adapters list
      relmail adapters list --json | jq '.adapters[] | select(.selected)'
    """
    from ..delivery import ADAPTERS, adapter_class, adapter_keys, check_keys, delivery_config
    from ..errors import ConfigError

    try:
        delivery = state.project.settings.section("delivery")
        selected = delivery.get("adapter", "file")
    except ConfigError:
        delivery = selected = None  # no project here: list the adapters anyway
    rows = []
    for name in ADAPTERS:
        cls = adapter_class(name)
        rows.append({
            "name": name,
            "selected": name == selected,
            "max_batch": cls.max_batch,
            "settings": adapter_keys(name),
            # The module docstring's first line, without its reStructuredText ``literal`` marks.
            "summary": (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].replace("``", ""),
        })
    if as_json:
        echo_json({"selected": selected, "adapters": rows})
    else:
        echo_table(
            [["*" if r["selected"] else "", r["name"], r["max_batch"], r["summary"]] for r in rows],
            ["", "adapter", "per request", "what it does"],
        )
    if delivery is not None:
        # What relmail send would refuse: an unknown adapter, a key its table does not take.
        name, _ = delivery_config(delivery)
        check_keys(name, delivery.get(name, {}))


COMMANDS = [adapters]
