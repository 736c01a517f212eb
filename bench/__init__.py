"""The benchmark harness of issue 5: ``python -m bench run [--sizes 100k,1M,10M]``.

It generates data sets with ``generate_taps``, loads each into a fresh PostgreSQL
database with ``load_taps``, serves it with ``scripts/serve`` (2 workers, Redis) and
measures from separate processes: wrk for HTTP, ``bench.live`` for websockets.
"""
