"""The web page at `/` in headless Chromium: choose an image file, see its label and scores."""
from __future__ import annotations

import shutil

import pytest
from model_fixtures import solid_image_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver packages (installed by the test setup)")
def test_upload_shows_label(models_dir, make_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = make_server(model_name="classifier", model_base_path=str(models_dir / "classifier"))
    image = tmp_path / "blue.png"
    image.write_bytes(solid_image_bytes((10, 10, 240), "PNG"))

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://localhost:{server.rest_port}/")
        assert driver.find_element(By.ID, "model").get_attribute("value") == "classifier"
        driver.find_element(By.ID, "file").send_keys(str(image))
        status = driver.find_element(By.ID, "status")
        WebDriverWait(driver, 30).until(lambda d: status.get_attribute("data-label")
                                        or d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == ""
        assert status.get_attribute("data-label") == "blue"
        rows = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
        assert rows[0].startswith("blue") and len(rows) == 3
    finally:
        driver.quit()
