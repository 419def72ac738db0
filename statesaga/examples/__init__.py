"""Example sagas with in-memory fake services: `trip` and `payment`."""
