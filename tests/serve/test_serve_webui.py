"""The Gradio web UI in a real headless Chromium: an extraction run through the page, with a screenshot."""

from __future__ import annotations

import shutil
import time

import pytest

from knowlm.infer.batching import BatchingEngine, EngineConfig


@pytest.fixture(scope="module")
def ui_service(tiny_model, tiny_model_dir):
    from knowlm.serve import Service

    model, tokenizer = tiny_model
    engine = BatchingEngine(model, tokenizer, EngineConfig(num_threads=1))
    service = Service.from_engine(engine, str(tiny_model_dir))
    yield service
    engine.stop(timeout=5)


def test_page_callbacks_stream_and_tabulate(ui_service):
    from knowlm.serve.webui import WebUI, parse_schema_text, record_rows

    ui_service.engine.start()
    ui = WebUI(ui_service)
    steps = list(ui.instruct(ui_service.default, "介绍一下浙江大学", "", 12, 0.0, 1.0, 0, 1.0))
    assert len(steps) > 1 and all(b.startswith(a) for a, b in zip(steps, steps[1:]))  # streamed, growing
    assert parse_schema_text("ner", "人物, 地点，组织") == ["人物", "地点", "组织"]
    assert parse_schema_text("ee", '[{"event_type": "e", "arguments": ["a"]}]')[0]["event_type"] == "e"
    record = {"entities": [{"text": "浙江大学", "type": "组织机构", "start": 0, "end": 4}],
              "relations": [{"head": "A", "relation": "r", "tail": "B"}],
              "events": [{"trigger": "t", "type": "e", "arguments": [{"text": "x", "role": "y"}]}]}
    assert record_rows(record) == [["entity", "组织机构", "浙江大学 [0:4]", ""], ["relation", "r", "A", "B"], ["event", "e", "t", "y=x"]]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")), reason="needs Debian chromium + chromium-driver")
def test_extraction_through_the_page_in_headless_chromium(ui_service, artifacts_dir, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from knowlm.utils.net import free_port
    from knowlm.serve.webui import launch

    port = free_port()
    demo = launch(ui_service, port=port, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        tab = wait.until(EC.element_to_be_clickable((By.XPATH, "//button[@role='tab' and contains(., 'Extraction')]")))
        tab.click()
        text = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#extract-text textarea")))
        text.send_keys("浙江大学位于杭州。")
        schema = driver.find_element(By.CSS_SELECTOR, "#extract-schema textarea")
        schema.clear()
        schema.send_keys("组织机构, 地理位置")
        max_tokens = driver.find_element(By.CSS_SELECTOR, "#extract-max input[type=number]")
        max_tokens.send_keys(Keys.CONTROL, "a")
        max_tokens.send_keys("32", Keys.TAB)
        driver.find_element(By.CSS_SELECTOR, "#extract-run").click()
        raw = driver.find_element(By.CSS_SELECTOR, "#extract-raw textarea")
        wait.until(lambda d: raw.get_attribute("value").strip())
        status = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#extract-status").text.strip() or None)
        assert "parse status" in status and "1 prompt" in status
        record_text = driver.find_element(By.CSS_SELECTOR, "#extract-record").text
        assert "浙江大学位于杭州" in record_text and "parse_status" in record_text
        headers = driver.find_element(By.CSS_SELECTOR, "#extract-table").text
        assert "type / relation" in headers
        time.sleep(0.3)
        driver.save_screenshot(str(artifacts_dir / "webui_extraction.png"))
        assert (artifacts_dir / "webui_extraction.png").stat().st_size > 10_000
    finally:
        driver.quit()
        demo.close()
