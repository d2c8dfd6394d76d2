"""Fault injection: every fault survived, with the broker's promises intact."""
