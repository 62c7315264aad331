"""Checks of the Istio objects: routes, mesh policy, retries, timeouts, outlier detection, public
paths, DestinationRules, and the connection bounds the app and Envoy must agree on."""

from __future__ import annotations

from helpers.k8s.objects import (
    API,
    APP_REQUEST_TIMEOUT_S,
    INTERNAL_PATHS,
    PUBLIC_PATHS,
    SAFE_RETRY_ON,
    Obj,
    api_deployment,
    config_value,
    duration_seconds,
    find,
    namespace_of,
    of_kind,
    pod_spec,
    ref,
    resolve_service,
)
from housing_api.config import Settings


def check_virtual_services(objs: list[Obj]) -> list[str]:
    """Each VirtualService is bound to a rendered Gateway and routes to a real Service port."""
    problems = []
    for vs in of_kind(objs, "VirtualService"):
        namespace = namespace_of(vs)
        for gateway in vs["spec"].get("gateways", []):
            gw_ns, _, gw_name = gateway.rpartition("/")
            if gateway != "mesh" and find(objs, "Gateway", gw_name, gw_ns or namespace) is None:
                problems.append(f"{ref(vs)} names gateway {gateway!r}, which is not rendered")
        for route in vs["spec"]["http"]:
            for destination in (r["destination"] for r in route["route"]):
                svc = resolve_service(objs, destination["host"], namespace)
                port = destination.get("port", {}).get("number")
                if svc is None:
                    problems.append(
                        f"{ref(vs)} routes to host {destination['host']!r}, which is not a rendered Service"
                    )
                elif port not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"{ref(vs)} routes to port {port} of {ref(svc)}, which has no such port")
    return problems


def check_mesh_policy(objs: list[Obj]) -> list[str]:
    """One VirtualService carries the API's route policy for every client: bound to the ingress
    gateway and to `mesh`, for the public host and the Service's host, with no route narrowed to one
    gateway (check_retries and check_timeouts then hold for both). A mesh client calling
    housing-api.housing-api.svc would otherwise get no timeout and Istio's default retries of 503."""
    api = [vs for vs in of_kind(objs, "VirtualService") if any(
        resolve_service(objs, d["destination"]["host"], namespace_of(vs)) is not None
        for route in vs["spec"]["http"] for d in route["route"]
    )]  # fmt: skip
    if len(api) != 1:
        return [f"expected one VirtualService routing to the API, found {[ref(vs) for vs in api]}"]
    vs = api[0]
    spec, namespace = vs["spec"], namespace_of(vs)
    problems = []
    gateways = spec.get("gateways", [])
    if "mesh" not in gateways:
        problems.append(f"{ref(vs)} is not bound to mesh: clients inside the mesh get Istio's default retries")
    if not [g for g in gateways if g != "mesh"]:
        problems.append(f"{ref(vs)} is bound to no ingress gateway")
    fqdn = f"{API}.{namespace}.svc.cluster.local"
    if not any(resolve_service(objs, host, namespace) is not None for host in spec["hosts"]):
        problems.append(f"{ref(vs)} hosts {spec['hosts']} lack the cluster host {fqdn}")
    for route in spec["http"]:
        narrowed = [m["gateways"] for m in route.get("match", []) if "gateways" in m]
        if narrowed:
            problems.append(f"{ref(vs)} route {route.get('name', '?')} applies only to gateways {narrowed}")
    return problems


def check_retries(objs: list[Obj]) -> list[str]:
    """Every route sets a timeout and retries only connect-failure,refused-stream.

    Without an explicit policy Istio retries 503s by default; retrying 5xx or 429 would multiply
    load exactly when the service sheds it.
    """
    problems = []
    for vs in of_kind(objs, "VirtualService"):
        for route in vs["spec"]["http"]:
            where = f"{ref(vs)} route {route.get('name', '?')}"
            if "timeout" not in route:
                problems.append(f"{where} has no request timeout")
            retries = route.get("retries")
            if retries is None:
                problems.append(f"{where} has no retries block (Istio's default retries 503s)")
                continue
            retry_on = {c.strip() for c in retries.get("retryOn", "").split(",") if c.strip()}
            if retries.get("attempts", 0) > 0 and retry_on != SAFE_RETRY_ON:
                problems.append(f"{where} retryOn {sorted(retry_on)}, expected exactly {sorted(SAFE_RETRY_ON)}")
    return problems


def app_request_timeout_s(objs: list[Obj]) -> float:
    """The service's own request deadline: REQUEST_TIMEOUT_S from the rendered config, else its default."""
    for config in of_kind(objs, "ConfigMap"):
        if "REQUEST_TIMEOUT_S" in config.get("data", {}):
            return float(config["data"]["REQUEST_TIMEOUT_S"])
    return APP_REQUEST_TIMEOUT_S


def check_timeouts(objs: list[Obj]) -> list[str]:
    """Each route's timeout/perTryTimeout pair means what it says.

    Envoy retries a per-try timeout only when retryOn names it; ours does not (connect-failure,
    refused-stream), so a perTryTimeout shorter than `timeout` answers 504 by itself and `timeout`
    never applies. Either an attempt may use the whole budget (perTryTimeout == timeout), or every
    attempt fits in it. And the gateway must outwait the service's own deadline, so the service's
    503 with Retry-After reaches the client instead of a gateway 504.
    """
    problems = []
    deadline = app_request_timeout_s(objs)
    for vs in of_kind(objs, "VirtualService"):
        for route in vs["spec"]["http"]:
            where = f"{ref(vs)} route {route.get('name', '?')}"
            if "timeout" not in route:
                continue  # check_retries reports it
            timeout = duration_seconds(route["timeout"])
            retries = route.get("retries", {})
            per_try = duration_seconds(retries.get("perTryTimeout", route["timeout"]))
            tries = 1 + retries.get("attempts", 0)
            if per_try != timeout and per_try * tries > timeout:
                problems.append(
                    f"{where}: perTryTimeout {per_try:g} s x {tries} attempts exceeds timeout {timeout:g} s, so a "
                    f"per-try timeout answers 504 unretried and the {timeout:g} s timeout never applies"
                )
            if min(per_try, timeout) <= deadline:
                problems.append(
                    f"{where}: the gateway gives up after {min(per_try, timeout):g} s, not after the service's "
                    f"REQUEST_TIMEOUT_S ({deadline:g} s): clients get a gateway 504 instead of the service's 503"
                )
    return problems


def check_outlier_detection(objs: list[Obj]) -> list[str]:
    """Outlier detection that a slow request cannot trigger.

    The service answers a request past its deadline with 503, which Envoy counts both as a 5xx and
    as a gateway error: either count would eject a pod for being slow and pile its load onto the
    others. Both must be 0 explicitly (an unset consecutive5xxErrors means 5 in Envoy); ejection
    may count only local-origin failures (refused or reset connections, the gateway's own timeout).
    """
    problems = []
    for rule in of_kind(objs, "DestinationRule"):
        outlier = rule["spec"].get("trafficPolicy", {}).get("outlierDetection")
        if outlier is None:
            continue  # check_destination_rules reports it
        for field in ("consecutive5xxErrors", "consecutiveGatewayErrors"):
            if outlier.get(field, 5 if field == "consecutive5xxErrors" else 0) != 0:
                problems.append(
                    f"{ref(rule)} {field}={outlier.get(field, 'unset (5)')}: the service's 503 for a request past "
                    "its deadline would eject a slow but healthy pod"
                )
        if outlier.get("consecutiveLocalOriginFailures") and not outlier.get("splitExternalLocalOriginErrors"):
            problems.append(f"{ref(rule)} consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
    return problems


def _route_matches(vs: Obj) -> list[Obj]:
    return [m.get("uri", {}) for route in vs["spec"]["http"] for m in route.get("match", [{}])]


def _route_serves(matches: list[Obj], path: str) -> bool:
    return any(m == {} or m.get("exact") == path or path.startswith(m.get("prefix", "\0")) for m in matches)


def check_public_routes(objs: list[Obj]) -> list[str]:
    """The ingress serves exactly the public API: never /metrics or /livez."""
    services = of_kind(objs, "VirtualService")
    if not services:
        return ["no VirtualService rendered"]
    matches = [m for vs in services for m in _route_matches(vs)]
    problems = [f"no route serves {path}" for path in PUBLIC_PATHS if not _route_serves(matches, path)]
    problems += [f"the ingress exposes the internal {path}" for path in INTERNAL_PATHS if _route_serves(matches, path)]
    return problems


def check_destination_rules(objs: list[Obj]) -> list[str]:
    """The API's DestinationRule caps connections and ejects pods that fail at the gateway."""
    rules = of_kind(objs, "DestinationRule")
    if not rules:
        return ["no DestinationRule rendered"]
    problems = []
    for rule in rules:
        svc = resolve_service(objs, rule["spec"]["host"], namespace_of(rule))
        if svc is None:
            problems.append(f"{ref(rule)} host {rule['spec']['host']!r} is not a rendered Service")
        policy = rule["spec"].get("trafficPolicy", {})
        pool = policy.get("connectionPool", {})
        if not pool.get("tcp", {}).get("maxConnections") or not pool.get("http"):
            problems.append(f"{ref(rule)} sets no connectionPool limits")
        if "outlierDetection" not in policy:
            problems.append(f"{ref(rule)} has no outlierDetection")
    return problems


ENVOY_MAX_HEADERS_BYTES = 60 * 1024  # Envoy's default max_request_headers_kb; it adds its own x-* headers on top
ISTIO_DEFAULT_IDLE_TIMEOUT_S = 3600.0  # a DestinationRule without connectionPool.http.idleTimeout


def app_setting(objs: list[Obj], key: str) -> float:
    """A numeric setting as the API container sees it: the rendered config, else Settings' default."""
    deployment = api_deployment(objs)
    assert deployment is not None
    configured = config_value(objs, deployment, pod_spec(deployment)["containers"][0], key)
    return float(configured) if configured else float(Settings.model_fields[key.lower()].default)


def check_connection_bounds(objs: list[Obj]) -> list[str]:
    """The app's keep-alive outlives the proxy's idle timeout, and its head limit admits what Envoy passes.

    The side that closes an idle keep-alive connection must be the proxy: when the app closes one
    that Envoy is reusing, the request Envoy just wrote on it is lost (docs/reliability.md, "The
    server layer").
    """
    keepalive = app_setting(objs, "KEEPALIVE_TIMEOUT_S")
    problems = []
    for rule in of_kind(objs, "DestinationRule"):
        http = rule["spec"].get("trafficPolicy", {}).get("connectionPool", {}).get("http", {})
        idle = duration_seconds(http["idleTimeout"]) if "idleTimeout" in http else ISTIO_DEFAULT_IDLE_TIMEOUT_S
        if keepalive <= idle:
            problems.append(
                f"KEEPALIVE_TIMEOUT_S {keepalive:g} s is not above {ref(rule)}'s idleTimeout {idle:g} s: "
                "the app would close connections Envoy may reuse"
            )
    if of_kind(objs, "DestinationRule") and app_setting(objs, "MAX_HEADER_BYTES") < ENVOY_MAX_HEADERS_BYTES + 4096:
        problems.append(f"MAX_HEADER_BYTES is below Envoy's {ENVOY_MAX_HEADERS_BYTES} bytes plus its own headers")
    return problems
