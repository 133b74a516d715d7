"""The connection form, as a newcomer uses it: real Airflow UI in headless Chromium (Debian's), the client
certificates pasted into the form's fields from the clipboard, saved; the connection then works and the key
never comes back in clear."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_services import AirflowServices, wait_until  # scripts/, on the path from conftest
from conftest import VENV_BIN, Daemon, run_cli

from remote_docker import compat

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not compat.CONNECTION_FORM_FIELDS,
                                reason="Airflow 3.1's form has no provider fields: TLS settings go in Extra JSON")


@pytest.fixture(scope="module")
def api_server(daemon: Daemon, tmp_path_factory) -> Iterator[AirflowServices]:
    """Only the API server (which serves the UI) on a fresh home; no connection in its environment."""
    home = tmp_path_factory.mktemp("form-home")
    services = AirflowServices(airflow=VENV_BIN / "airflow", home=home, dags=home / "dags", connection_json="{}",
                               connection_in_database=False)
    (home / "dags").mkdir()
    try:
        services.start(components=("api-server",))
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def browser(api_server: AirflowServices):
    # Selenium finds no driver by itself here (its manager would go to the internet): Debian's, named
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400",
                     "--proxy-server=direct://", "--proxy-bypass-list=*"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    origin = f"http://127.0.0.1:{api_server.port}"
    driver.execute_cdp_cmd("Browser.grantPermissions",
                           {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    try:
        yield driver
    finally:
        driver.quit()


def _until(check, what: str, timeout: float = 30):
    """``wait_until`` for a page React re-renders: an element replaced while it was looked at is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException

    def settled():
        try:
            return check()
        except StaleElementReferenceException:
            return None

    return wait_until(settled, timeout, what)


def _button(driver, text: str):
    from selenium.webdriver.common.by import By

    return _until(lambda: next((b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == text), None),
                  f"a button {text!r}")


def _paste(driver, field_name: str, text: str) -> str:
    """Put ``text`` on the clipboard and paste it into the field with Ctrl+V, as a user does; the field's value."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.execute_async_script("navigator.clipboard.writeText(arguments[0]).then(arguments[1])", text)
    field = driver.find_element(By.NAME, field_name)
    driver.execute_script("arguments[0].scrollIntoView()", field)
    field.click()
    field.send_keys(Keys.CONTROL, "v")
    return _until(lambda: field.get_attribute("value"), f"the paste into {field_name}", 10)


def test_pems_pasted_into_the_form_make_a_working_connection_whose_key_shows_masked(
        api_server: AirflowServices, browser, daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    client = daemon.client_dir
    pems = {name: (client / file).read_text() for name, file in
            (("ca_cert", "ca.pem"), ("client_cert", "cert.pem"), ("client_private_key", "key.pem"))}
    browser.get(f"http://127.0.0.1:{api_server.port}/connections")
    _button(browser, "Add Connection").click()
    _until(lambda: browser.find_elements(By.NAME, "connection_id"), "the add-connection form", 30)
    browser.find_element(By.NAME, "connection_id").send_keys("rd_pasted")
    kind = browser.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    kind.click()
    kind.send_keys("remote")
    _until(lambda: [o for o in browser.find_elements(By.CSS_SELECTOR, "[role=option]") if "Remote Docker" in o.text],
           "the Remote Docker connection type", 10)[0].click()
    host = _until(lambda: browser.find_elements(By.NAME, "host"), "the host field", 10)[0]
    host.clear()
    host.send_keys(f"tcp://127.0.0.1:{daemon.port}")
    _button(browser, "Extra Fields").click()
    pasted = {name: _paste(browser, f"element_{name}", pem) for name, pem in pems.items()}
    # the certificates go into text areas and keep their lines; the key field is a password input, where the
    # browser flattens them (the connection rebuilds the PEM)
    assert pasted["ca_cert"].strip() == pems["ca_cert"].strip()
    assert pasted["client_cert"].strip() == pems["client_cert"].strip()
    assert "\n" not in pasted["client_private_key"] and pasted["client_private_key"].startswith("-----BEGIN")
    _button(browser, "Save").click()
    _until(lambda: "successfully created" in browser.find_element(By.TAG_NAME, "body").text, "the save", 30)

    found = run_cli("doctor", "--conn-id", "rd_pasted", env={"AIRFLOW_HOME": str(api_server.home)})
    assert found.returncode == 0, found.stderr
    assert f"daemon: https://127.0.0.1:{daemon.port}" in found.stdout and "tls: mutual TLS, server certificate verified" in found.stdout

    stored = json.loads(api_server.rest("GET", "/api/v2/connections/rd_pasted")["extra"])
    assert stored["client_private_key"] == "***", stored
    assert stored["ca_cert"].strip() == pems["ca_cert"].strip()  # a certificate is not a secret: shown as pasted

    browser.refresh()
    _until(lambda: [r for r in browser.find_elements(By.TAG_NAME, "tr") if "rd_pasted" in r.text], "the list row", 30)
    edit = _until(lambda: browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Edit Connection']"),
                  "the edit button", 10)[0]
    edit.click()
    _button(browser, "Extra Fields").click()
    _until(lambda: browser.find_element(By.NAME, "element_client_private_key").is_displayed(), "the key field", 10)
    shown = browser.find_element(By.NAME, "element_client_private_key").get_attribute("value")
    assert shown == "***", shown

    # editing something else and saving keeps the key (Airflow merges the masked value back)
    _button(browser, "Standard Fields").click()
    _until(lambda: browser.find_element(By.NAME, "description").is_displayed(), "the description field", 10)
    browser.find_element(By.NAME, "description").send_keys("edited in the form")
    _button(browser, "Save").click()
    _until(lambda: "edited in the form" in browser.find_element(By.TAG_NAME, "body").text, "the edited row", 30)
    again = run_cli("doctor", "--conn-id", "rd_pasted", env={"AIRFLOW_HOME": str(api_server.home)})
    assert again.returncode == 0 and "tls: mutual TLS, server certificate verified" in again.stdout, again.stderr
