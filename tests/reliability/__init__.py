"""Fault-injection tests: bad inputs, hostile ids, kills, full and read-only disks, privacy."""
