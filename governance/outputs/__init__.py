"""Production outputs recorded by serving replicas (ours or anyone's) for the monitors."""
