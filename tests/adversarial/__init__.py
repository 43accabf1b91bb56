"""The standing adversarial suite: every fault or hostile input that once got through, kept fixed.

Each module names the defect it guards against; each test failed before its fix. Tests are
bounded in count and time and send traffic to loopback only.
"""
