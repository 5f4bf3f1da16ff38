"""carla_scenarios: open-set scenarios, the obstacle-avoiding agent, the sensor rig, the collector and the
offline CARLA-compatible world."""
