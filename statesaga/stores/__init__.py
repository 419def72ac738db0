"""Saga stores: the durable saga log behind the `SagaStore` protocol."""
