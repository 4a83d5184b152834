"""The protocol fuzzer: every RPC of every service, hit with requests generated from the
contracts' descriptors and with corrupted bytes, by two tenants' admins and agents, through
Envoy and directly; one more tenant's data, marked with canary strings, must never reach
them and must not change. `hacs fuzz` runs it; tests/e2e/test_fuzz.py runs a short one."""
