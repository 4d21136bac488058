"""
Drop-in commands for gvisor-tap-vsock users: C{gvproxy} and C{gvforwarder}
take that project's own command lines (Go C{flag} syntax) and its YAML file,
and run the same services as C{twistd gvtap} and C{twistd gvtap-guest}.
"""
