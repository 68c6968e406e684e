"""The benchmark of meetingtasks: our figures beside plain Celery and Redis's limit.

``scripts/bench`` (or ``meetingtasks bench``, or ``python -m bench``) starts one private
redis-server and measures, each in its own fresh process so no measurement warms or
pollutes another:

run            the orchestrator: options, the private Redis, the steps, the reports
config         sizes of a run (``--quick`` or the default) and what it measures
child          how the orchestrator runs a measurement in a child process (progress, result)
apps           the two apps compared: a plain default Celery app and ours
plain_app      the plain Celery app itself (also ``celery -A bench.plain_app worker``)
publish        publishes per second: plain and our ``delay()``, ``dispatch()``, batched dispatch
workers        no-op tasks per second of real worker processes, steady state
latency        submit -> result latency without the gateway, at a stated rate
gateway        WebSocket figures through ``meetingtasks gateway`` (when it exists)
frames         the client side of the gateway protocol, without sockets
redis_ceiling  ``redis-benchmark`` against the same server
figures        what each figure is: unit, plain Celery equivalent, target
report         results.json, results.md and results.png
stats          percentiles and rates
"""
