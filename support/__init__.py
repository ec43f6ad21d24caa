"""P5: support access that expires by itself (OpenSSH user certificates)."""
