"""What a model-scored plan logs about its own predictions: outputs of one model, never inputs of the next."""

#: Frame columns (``<message>.<name>``) the model scorer adds, logged with the decision.
OUTPUT_COLUMNS = ("model_p_positive", "model_uplift", "model_p_irritation", "irritation_cost", "expected_value")
#: Logged keys that a model plan writes about itself.
OUTPUT_KEYS = frozenset(OUTPUT_COLUMNS) | {"model_version", "model_outcome", "model_uplift_unused"}
#: Prefixes of the logged per-model contributions (``u.`` uplift, ``p.`` probability).
CONTRIBUTION_PREFIXES = ("u.", "p.")


def is_model_output(key: str) -> bool:
    """True for a logged key that a previous model plan wrote about its own predictions."""
    return key in OUTPUT_KEYS or key.startswith(CONTRIBUTION_PREFIXES)
