"""Presentation: the terminal tables of a trace and a comparison, and the Markdown reports (a sweep's, the seed
argument's claims, the textbook's worked examples) with their plots. Reports format what they are given; the
figures come from the core (tracer.api, tracer.compare, tracer.sweep) or from stored sweep records."""
