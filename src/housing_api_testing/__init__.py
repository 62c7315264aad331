"""What the project's tests, benchmarks, load tests and scripts share, and the service never loads.

`harness` starts real processes (redis-server, Sentinel and Cluster groups, the service, MLflow,
podman containers) with bounded waits and a clean stop. It lives beside `housing_api` so that
bench/, loadtest/ and scripts/ import it without putting tests/ on sys.path; the editable install of
`make install` makes it importable, and the wheel the image installs leaves it out
(pyproject.toml, [tool.setuptools.packages.find]).
"""
