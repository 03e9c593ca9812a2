"""The locust load test, shipped inside the package as `harness.loadtests`."""
