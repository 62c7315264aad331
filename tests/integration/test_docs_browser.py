"""/docs in a real browser with every outside address blocked: the page works from the pod alone.

Headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium with the system
browser and driver: nothing is downloaded) opens /docs of a real `housing-api serve`. Outside
addresses cannot be reached: every host name but 127.0.0.1 resolves to nothing, and any proxied
request goes to a closed port. The browser starts on about:blank (a fresh profile would open the
new-tab page, which is itself a page that reaches out), and its own network log must then show
that nothing asked any other host for anything, whatever the scheme. The test expands
`POST /predict`, uses "Try it out" with the worked example, executes it, and reads a 200 with the
four predictions the service gives for that batch.

`make docs-png` runs it with DOCS_SCREENSHOT set, which saves the page as the README shows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import app_client

from housing_api.schemas import SAMPLE_BATCH
from housing_api_testing.harness import ServiceProcess

pytestmark = pytest.mark.integration

CHROMIUM_INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
# The flags the brief for headless runs asks for, plus a closed door to the outside.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # Every name but loopback fails to resolve; a proxied request goes to the discard port,
    # where nothing listens. Chromium never proxies loopback, so the service stays reachable.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--window-size=1280,1100",
)
# A fresh profile's first page is the new-tab page (chrome://new-tab-page-third-party/, or Google's
# chrome-untrusted://new-tab-page/, which asks for more). A URL argument cannot replace it:
# chromedriver turns `about:blank` into the flag `--about:blank`. The profile's startup pages can.
BLANK_START = {"session.restore_on_startup": 4, "session.startup_urls": ["about:blank"],
               "homepage": "about:blank", "homepage_is_newtabpage": False}  # fmt: skip
WAIT_S = 60


def _binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium() -> tuple[str, str]:
    """(chromium, chromedriver); as root with apt-get, Debian's packages are installed when missing."""
    found = _binaries()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["sh", "-c", CHROMIUM_INSTALL.replace("install -y", "-qq install -y")], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)  # fmt: skip
        found = _binaries()
    if found is None:
        pytest.skip(f"chromium and chromedriver are not installed; install them with: {CHROMIUM_INSTALL}")
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("docs-browser") / "service.log"
    server = ServiceProcess({"OMP_NUM_THREADS": "1"}, log=log).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Selenium driver of Chromium on a new, empty profile, on about:blank, logging every request."""
    binary, driver_path = chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.add_experimental_option("prefs", BLANK_START)
        # The DevTools network log: every request the page makes, including failed ones.
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (DevTools Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def outside(urls: list[str], service_url: str) -> list[str]:
    """The URLs with a host other than the service's, whatever their scheme (chrome-untrusted://new-tab-page/
    counts: it has a host). Only URLs without one stay: relative paths, about:blank, data:, and blob:
    of the service's own origin (a blob URL names the origin that made it)."""
    origin = urlsplit(service_url).netloc
    return [u for u in urls if urlsplit(u.removeprefix("blob:")).netloc not in ("", origin)]


def test_docs_work_offline_and_try_it_out_predicts_the_worked_example(browser: Any, service: ServiceProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(service.url + "/docs")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))

    # Swagger UI rendered the operations from /openapi.json: the page is not blank.
    operations = {
        (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
         block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text)
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")
    }  # fmt: skip
    assert {("POST", "/predict"), ("GET", "/predict"), ("GET", "/health"), ("GET", "/readyz")} <= operations

    post = browser.find_element(By.CSS_SELECTOR, ".opblock.opblock-post")
    post.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: post.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    body = wait.until(lambda _: post.find_element(By.CSS_SELECTOR, "textarea.body-param__text"))
    assert json.loads(body.get_attribute("value")) == SAMPLE_BATCH  # the worked example, prefilled
    post.find_element(By.CSS_SELECTOR, "button.execute").click()

    status = wait.until(
        lambda _: post.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    )  # fmt: skip
    assert status.text.strip() == "200"
    shown = post.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .highlight-code pre").text
    answer = json.loads(shown)
    expected = httpx.post(service.url + "/predict", json=SAMPLE_BATCH, timeout=30).json()
    assert len(answer["prediction"]) == 4
    assert answer["prediction"] == expected["prediction"]

    screenshot = os.environ.get("DOCS_SCREENSHOT")
    if screenshot:
        # The server's answer (Code 200, the body with four predictions) and the request URL above it.
        table = post.find_element(By.CSS_SELECTOR, ".live-responses-table")
        browser.execute_script("arguments[0].scrollIntoView(true); window.scrollBy(0, -160);", table)
        # The body box scrolls on its own: show its end, where the predictions are.
        browser.execute_script(
            "for (const e of arguments[0].querySelectorAll('pre')) e.scrollTop = e.scrollHeight;", table
        )
        browser.save_screenshot(str(Path(screenshot).resolve()))

    # Nothing on the page came from, or even tried, another host.
    urls = requested_urls(browser)
    assert any(u.endswith("/docs/static/swagger-ui-bundle.js") for u in urls), urls
    assert outside(urls, service.url) == []


def test_the_docs_page_names_only_files_the_service_serves() -> None:
    # Without a browser: every script, stylesheet and icon of /docs is served by the app itself.
    with app_client() as client:
        html = client.get("/docs").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(assets) == 3 and outside(assets, "http://testserver") == [], assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
        assert client.get("/redoc").status_code == 404  # ReDoc's bundle draws its logo from a CDN


def test_the_browser_starts_on_a_blank_page_that_asks_for_nothing() -> None:
    # A fresh profile would start on the new-tab page, which asks chrome://, chrome-untrusted:// and more.
    with headless_chromium() as driver:
        assert [driver.current_url] == ["about:blank"]
        assert requested_urls(driver) == []


def test_the_browser_log_and_the_outside_check_see_a_page_asking_another_host(
    browser: Any, service: ServiceProcess
) -> None:
    # The mutation the test above must catch, in the same browser: the service's page asks a CDN for a
    # script (the request fails, as every outside one does here, and the log still shows it).
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service.url + "/docs")
    seen = requested_urls(browser)
    assert outside(seen, service.url) == [], seen
    cdn = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
    browser.execute_script(
        "const s = document.createElement('script'); s.src = arguments[0]; document.head.append(s);", cdn
    )
    WebDriverWait(browser, WAIT_S).until(lambda _: seen.extend(requested_urls(browser)) or cdn in seen)
    assert outside(seen, service.url) == [cdn]


@pytest.mark.parametrize(
    "url",
    [
        "chrome-untrusted://new-tab-page/x",  # Google's new-tab page, a fresh profile's first page
        "chrome://new-tab-page-third-party/",
        "chrome://resources/js/assert.js",
        "devtools://devtools/bundled/inspector.html",
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
        "//cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
        "ws://example.com/socket",
        "http://127.0.0.1:9/",  # the service's host on another port is another server
        "blob:https://example.com/8c1f0a2e",
    ],
)
def test_any_url_with_another_host_is_outside_whatever_its_scheme(url: str) -> None:
    assert outside([url], "http://127.0.0.1:8000") == [url]


@pytest.mark.parametrize(
    "url",
    ["about:blank", "data:image/png;base64,iVBORw0KGgo=", "blob:http://127.0.0.1:8000/8c1f0a2e", "/docs/static/x.js",
     "http://127.0.0.1:8000/openapi.json"],
)  # fmt: skip
def test_urls_without_a_host_or_on_the_service_are_not_outside(url: str) -> None:
    assert outside([url], "http://127.0.0.1:8000") == []


def test_the_outside_check_sees_a_cdn_request() -> None:
    # What the assertions above would catch: FastAPI's default page loads from a public CDN.
    from fastapi.openapi.docs import get_swagger_ui_html

    html = bytes(get_swagger_ui_html(openapi_url="/openapi.json", title="t").body).decode()
    assert outside(re.findall(r'(?:src|href)="([^"]+)"', html), "http://testserver")
