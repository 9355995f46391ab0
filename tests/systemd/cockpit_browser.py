#!/usr/bin/python3
"""Drives DynPlug's Cockpit page in headless Chromium, as a user would.

Runs inside the systemd test container (see cockpit.sh), as root, against Cockpit on
127.0.0.1:9090. Logs in through Cockpit's login page as USER (group dynplug) and as
OTHER (not in it), acts on the page, and checks each action's effect on the bus with
busctl. Prints one TAP-like line per check ("ok - ..." / "not ok - ...") and saves a
screenshot per step into the output directory.

Usage: cockpit_browser.py OUTDIR USER PASSWORD OTHER OTHER_PASSWORD
"""
import subprocess
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BASE = "http://127.0.0.1:9090"
FRAME = 'iframe[name="cockpit1:localhost/dynplug"]'
DEST = "org.dynplug.Manager"
MARKUP_EVENT = "<img src=x onerror=\"window.dynplugInjected='event'\"> live"

outdir, user, password, other, other_password = sys.argv[1:6]
failures = 0


def report(passed, desc, detail=""):
    global failures
    if passed:
        print("ok - " + desc, flush=True)
    else:
        failures += 1
        print("not ok - " + desc + (" (" + detail + ")" if detail else ""), flush=True)


def wait_for(what, probe, timeout=20.0, interval=0.05):
    """Polls probe() until it returns a true value; raises naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except WebDriverException as e:  # the element is being replaced: try again
            last_error = e
        time.sleep(interval)
    raise TimeoutError("waited %.0f s for %s%s" % (timeout, what, ": %s" % last_error if last_error else ""))


def check(desc, probe, timeout=20.0):
    """Passes when probe() turns true before the deadline."""
    try:
        wait_for(desc, probe, timeout)
        report(True, desc)
        return True
    except TimeoutError as e:
        report(False, desc, str(e))
        return False


def busctl(*args):
    return subprocess.run(["busctl", "--system", *args], capture_output=True, text=True, timeout=30).stdout.strip()


def enabled_on_bus(plugin):
    return busctl("get-property", DEST, "/org/dynplug/Manager/plugins/" + plugin, "org.dynplug.Plugin", "Enabled")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1200"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver", log_path=outdir + "/chromedriver.log"), options=options)


def shot(driver, name):
    driver.switch_to.default_content()
    driver.save_screenshot("%s/%s.png" % (outdir, name))


def log_in(driver, name, secret, step):
    driver.get(BASE + "/")
    wait_for("Cockpit's login page", lambda: driver.find_element(By.ID, "login-user-input").is_displayed())
    driver.find_element(By.ID, "login-user-input").send_keys(name)
    driver.find_element(By.ID, "login-password-input").send_keys(secret)
    shot(driver, step + "-login-" + name)
    driver.find_element(By.ID, "login-button").click()
    # Logged in: the shell (with its navigation) replaces the login form.
    check("%s logs in through Cockpit's login page" % name,
          lambda: driver.find_elements(By.ID, "nav-system") or "system" in driver.current_url, 30)


def open_page(driver):
    """Opens the DynPlug page in Cockpit's shell and enters its frame."""
    driver.get(BASE + "/dynplug")
    frame = wait_for("the DynPlug page's frame in the shell", lambda: driver.find_element(By.CSS_SELECTOR, FRAME))
    driver.switch_to.frame(frame)
    wait_for("the plugin table to load", lambda: page(driver, "return document.body.dataset.loaded === 'true'"))


def page(driver, script, *args):
    return driver.execute_script(script, *args)


def row_text(driver, plugin, field):
    return page(driver, "const c = document.querySelector('tr[data-plugin=\"' + arguments[0] + '\"] td[data-field=\"' + arguments[1] + '\"]');"
                "return c ? c.textContent : null", plugin, field)


def click(driver, css):
    """Finds and clicks, again if a refresh replaced the element in between."""
    wait_for("to click " + css, lambda: driver.find_element(By.CSS_SELECTOR, css).click() or True, 10)


def click_toggle(driver, plugin):
    click(driver, 'tr[data-plugin="%s"] button.toggle' % plugin)


def nothing_injected(driver):
    """No handler ran and no element came from plugin text. The second half matters most:
    Cockpit's Content-Security-Policy blocks inline handlers, so markup parsed as HTML
    would show as an element before it could ever run."""
    return page(driver, "return window.dynplugInjected === undefined &&"
                " document.querySelectorAll('img, svg, iframe, object, script:not([src])').length === 0")


def privileged_user(driver):
    log_in(driver, user, password, "01")
    shot(driver, "02-overview")
    open_page(driver)
    count = busctl("get-property", DEST, "/org/dynplug/Manager", DEST, "PluginCount").split()[-1]
    check("the table lists every plugin the daemon has (%s)" % count,
          lambda: page(driver, "return document.querySelectorAll('#plugins tbody tr').length") == int(count))
    check("each row shows state, isolation and signature",
          lambda: (row_text(driver, "echo", "state") or "").startswith("loaded")
          and row_text(driver, "echo", "isolation") and row_text(driver, "echo", "signature"))
    check("the service state comes from systemd",
          lambda: "active (running)" in driver.find_element(By.ID, "service-state").text)
    shot(driver, "03-plugins")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, FRAME))

    # A plugin whose description, events, output and errors are markup.
    click(driver, 'tr[data-plugin="markup"] button.link')
    check("the details show the markup plugin's description as text",
          lambda: "<img src=x onerror=" in driver.find_element(By.ID, "details-meta").text)
    check("the details show the sandbox layers",
          lambda: driver.find_element(By.ID, "details-sandbox").text.strip() != "")
    busctl("call", DEST, "/org/dynplug/Manager", DEST, "Execute", "ss", "markup", MARKUP_EVENT)
    check("a plugin event appears live, as text",
          lambda: MARKUP_EVENT in driver.find_element(By.ID, "events").text)
    busctl("call", DEST, "/org/dynplug/Manager", DEST, "Execute", "ss", "markup", "fail <script>window.dynplugInjected='error'</script>")
    click(driver, 'tr[data-plugin="markup"] button.link')
    check("its last error is shown as text",
          lambda: "<script>" in driver.find_element(By.ID, "details-error").text)
    report(nothing_injected(driver), "no markup a plugin supplied ran or became an element")
    shot(driver, "04-details-markup")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, FRAME))

    # Disable and enable, checked on the bus.
    click_toggle(driver, "echo")
    check("Disable turns the plugin off on the bus", lambda: enabled_on_bus("echo") == "b false")
    check("and the row says disabled", lambda: "disabled" in (row_text(driver, "echo", "state") or ""))
    shot(driver, "05-disabled")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, FRAME))
    click_toggle(driver, "echo")
    check("Enable turns it back on", lambda: enabled_on_bus("echo") == "b true")

    # A job with a live progress bar, cancelled half-way.
    click(driver, '#job-plugin option[value="count"]')
    driver.find_element(By.ID, "job-input").send_keys("20")
    driver.find_element(By.ID, "job-start").click()
    progress = "const p = document.getElementById('job-progress'); return p.hasAttribute('value') ? p.value : -1"
    try:
        first = wait_for("the job's progress bar to fill", lambda: page(driver, progress) > 0 and page(driver, progress), 10, 0.02)
        second = wait_for("the progress bar to move on", lambda: page(driver, progress) > first and page(driver, progress), 10, 0.02)
        driver.find_element(By.ID, "job-cancel").click()
        report(second < 1, "the progress bar moves (%.2f, then %.2f)" % (first, second))
    except TimeoutError as e:
        report(False, "the progress bar moves", str(e))
    check("Cancel ends the job cancelled", lambda: driver.find_element(By.ID, "job-state").text == "cancelled")
    number = driver.find_element(By.ID, "job-path").text.split()[0]
    check("the job is cancelled on the bus too",
          lambda: busctl("get-property", DEST, "/org/dynplug/Manager/jobs/" + number, "org.dynplug.Job", "State") == 's "cancelled"')
    check("its status text is shown", lambda: " of 20" in driver.find_element(By.ID, "job-status").text)
    check("the job's end is a live event", lambda: number + " finished cancelled" in driver.find_element(By.ID, "events").text)
    shot(driver, "06-job-cancelled")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, FRAME))

    driver.find_element(By.ID, "reload").click()
    events = lambda: driver.find_element(By.ID, "events").text
    check("the reload is a live event", lambda: "reload succeeded: " in events())
    summary = events().split("reload succeeded: ", 1)[-1].splitlines()[0]
    check("Reload shows the daemon's summary (%s)" % summary,
          lambda: summary and driver.find_element(By.ID, "reload-result").text == summary)
    report(nothing_injected(driver), "still no injected markup after events, errors and a reload")
    shot(driver, "07-reloaded")


def unprivileged_user(driver):
    log_in(driver, other, other_password, "08")
    open_page(driver)
    check("%s (not in group dynplug) sees the table too" % other,
          lambda: row_text(driver, "echo", "state") is not None)
    click_toggle(driver, "echo")
    alert = lambda: driver.find_element(By.ID, "alert").text
    check("Disable shows polkit's refusal naming the action",
          lambda: "not authorized: org.dynplug.manage" in alert())
    report(enabled_on_bus("echo") == "b true", "and echo stays enabled on the bus", enabled_on_bus("echo"))
    click(driver, '#job-plugin option[value="count"]')
    driver.find_element(By.ID, "job-start").click()
    check("starting a job is refused with the action named",
          lambda: "not authorized: org.dynplug.execute" in alert())
    shot(driver, "09-refused")


for run in (privileged_user, unprivileged_user):
    driver = browser()
    try:
        run(driver)
    except Exception as e:  # a step that could not even be tried is a failure, named
        report(False, "%s could not finish" % run.__name__, "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        try:
            shot(driver, "failed-" + run.__name__)
        except WebDriverException:
            pass
    finally:
        driver.quit()

sys.exit(1 if failures else 0)
