"""The catalog page in headless Chromium: what a person browsing it sees, after scripts."""

import shutil
import subprocess
import time
import urllib.request

import pytest

CHROMIUM = next(
    (b for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
     if shutil.which(b)),
    None,
)


def render(url: str) -> str:
    """The DOM after load, as headless Chromium built it."""
    assert CHROMIUM, "tests/run-all.sh installs chromium-headless-shell"
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout


def wait_for_evaluation(http: str) -> None:
    """The server evaluates SLAs at start; the page shows the result once it is in."""
    deadline = time.time() + 60
    while time.time() < deadline:
        body = urllib.request.urlopen(f"http://{http}/metrics").read().decode()
        if "meshgate_product_checked_timestamp_seconds{product=\"web.web_sessions\"" in body:
            return
        time.sleep(0.2)
    pytest.fail("no SLA evaluation within a minute")


def test_products_by_domain_with_sla_status(gateway):
    wait_for_evaluation(gateway["http"])
    dom = render(f"http://{gateway['http']}/catalog")
    for domain in ("checkout", "customers", "inventory", "marketing", "web"):
        assert f'data-domain="{domain}"' in dom
    assert 'data-name="customers.customer_profiles"' in dom
    assert "team-customers@company.com" in dom
    # The sample data is older than its freshness SLAs: the page says so at a glance.
    assert 'data-sla="breached"' in dom
    assert "6 of 6 products" in dom


def test_search_narrows_the_list(gateway):
    dom = render(f"http://{gateway['http']}/catalog?q=sku")
    assert 'data-name="inventory.stock_levels"' in dom
    assert 'data-name="customers.customer_profiles"' not in dom
    assert "1 of 6 products" in dom


def test_a_derived_product_page_shows_its_lineage(gateway):
    dom = render(f"http://{gateway['http']}/catalog/marketing/sales_by_region_v1")
    # Upstream -> product, each input linked, and where each column comes from.
    assert 'id="lineage"' in dom
    assert 'href="/catalog/checkout/checkout_orders_summary_v1"' in dom
    assert 'href="/catalog/customers/customer_profiles_v2"' in dom
    assert "checkout.checkout_orders_summary.total_amount (v1)" in dom
    assert 'data-refresh="ok"' in dom
    # And the input's page names what is built from it.
    upstream = render(f"http://{gateway['http']}/catalog/checkout/checkout_orders_summary_v1")
    assert 'href="/catalog/marketing/sales_by_region_v1"' in upstream


def test_a_product_page_shows_schema_masks_and_who_may_read(gateway):
    dom = render(f"http://{gateway['http']}/catalog/customers/customer_profiles_v2")
    assert "customers.customer_profiles v2" in dom
    # PII columns are marked and show their mask.
    row = dom.split('data-column="phone"')[1].split("</tr>")[0]
    assert "yes" in row and "last4" in row
    row = dom.split('data-column="region"')[1].split("</tr>")[0]
    assert "no" in row and "one of EU, US, APAC" in row
    row = dom.split('data-column="email"')[1].split("</tr>")[0]
    assert "pii.email" in row
    grants = dom.split('id="grants"')[1].split("</table>")[0]
    # Each role's effective view, and where each mask comes from.
    marketing = grants.split('data-role="marketing"')[1].split("</tr>")[0]
    assert "masked:" in marketing and "last4 (contract)" in marketing
    support = grants.split('data-role="eu_support"')[1].split("</tr>")[0]
    assert "hash (governance policy email-hashed)" in support
    assert "region = 'EU'" in support
    analyst = grants.split('data-role="data_analyst"')[1].split("</tr>")[0]
    assert "everything in the clear" in analyst


def test_the_page_needs_no_login_so_it_shows_no_measurements(gateway):
    """Row counts, freshness and quality are computed over rows some roles may not see:
    the page, open to any employee, shows the SLA targets and status only."""
    wait_for_evaluation(gateway["http"])
    dom = render(f"http://{gateway['http']}/catalog/customers/customer_profiles_v2")
    assert 'data-sla="breached"' in dom
    sla = dom.split('id="sla"')[1].split("<h2")[0]
    # The targets, as the contract states them ("1 day", formatted by humantime).
    assert "1day" in sla and "99%" in sla
    for measured in ("20000", "20,000", "measured", "last check"):
        assert measured not in sla, measured
    # Nor any server path, anywhere.
    assert "/sample-data/" not in dom and "/work/" not in dom


def test_unknown_product_is_a_404_page(gateway):
    try:
        urllib.request.urlopen(f"http://{gateway['http']}/catalog/x/nothing_v1")
        pytest.fail("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_a_product_page_says_what_codes_mean_and_what_numbers_measure(gateway):
    dom = render(f"http://{gateway['http']}/catalog/checkout/checkout_orders_summary_v1")
    # The labels of status_id, one row per code, with their meaning where given.
    assert 'data-column="status_id"' in dom
    assert '<tr data-value="2"><td><code>2</code></td><td class="label">shipped</td>' \
        '<td>Handed to the carrier</td></tr>' in dom
    assert '<td class="label">refunded</td>' in dom
    # The unit of the amount, in its own column of the schema table.
    assert '<tr class="" data-column="total_amount"><td>total_amount</td><td>decimal</td>' \
        '<td class="unit">USD</td>' in dom
    # And how SQL reaches the same labels.
    assert "value_labels" in dom
