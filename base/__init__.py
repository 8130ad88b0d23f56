"""What models/, meshes/ and tracer/ all need and none of them owns: the error type for bad input and the checks
every input layer runs. Imports nothing of the three."""
