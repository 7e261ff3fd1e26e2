"""Conformance suite of convkit: oracles and checks every backend must pass."""
