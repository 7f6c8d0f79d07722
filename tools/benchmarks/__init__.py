"""The pieces of tools/bench.py: measurement helpers, the model pairs it compares, and the
data-loader and kernel benchmarks. Run them through `python tools/bench.py <what>`."""
