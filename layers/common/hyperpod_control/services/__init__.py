"""Services: the control plane's decisions, as functions over models (pure where possible)."""
