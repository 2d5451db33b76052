"""The monitor: polls every instance, alerts by email, autoscales prod, judges the canary."""
