"""Benchmarks of pymprpc against gRPC's asyncio API and a raw asyncio + msgpack floor."""
