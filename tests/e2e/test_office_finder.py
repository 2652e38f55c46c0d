"""The office finder page in a real browser: Debian's Chromium, headless, driven by Playwright
(no browser download), against the directory served by uvicorn on a free loopback port over
the real PostgreSQL.

Screenshots go to ``test-artifacts/office-finder/`` (ignored by git): each test saves what it
checked, so a person can look at the page as the test saw it.
"""

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from litestar import Litestar
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from services.directory.app import create_app
from services.directory.settings import DirectorySettings
from services.infra.embedded import free_port
from tests.referrals import CCA_SITE
from tests.waits import until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "office-finder"
#: The flags the issue asks for; Playwright adds its automation flags to these.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALMONTE = {"latitude": 45.2257, "longitude": -76.1948}
#: The page's typography: hours ranges and French elisions.
EN_DASH, APOSTROPHE = "\u2013", "\u2019"
#: Everything axe-core checks (WCAG 2.0/2.1 A and AA, and its best practices).
AXE_OPTIONS: dict[str, Any] = {"resultTypes": ["violations"]}


def chromium_path() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path is None:
        pytest.fail(
            "Chromium is not installed: `apt-get install chromium` (make test installs it when "
            "run as root), or set CHROMIUM to its path"
        )
    return path


Finder = tuple[str, Callable[[], Awaitable[None]]]


@contextlib.asynccontextmanager
async def serving(app: Litestar, port: int | None = None) -> AsyncIterator[Finder]:
    """``app`` under uvicorn on a free loopback port (or ``port``): its URL, and a function
    that stops it (for the outage tests)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError("uvicorn stopped before it started serving")
        return bool(server.started)

    await until(started, within=30, what="uvicorn to serve the app")

    async def stop() -> None:
        server.should_exit = True
        await task

    try:
        yield f"http://127.0.0.1:{server.config.port}", stop
    finally:
        await stop()


@pytest.fixture
async def finder(fresh_database_url: str) -> AsyncIterator[Finder]:
    """The directory (page and API) under uvicorn on a free port: its URL, and a function that
    stops it (for the outage test)."""
    async with serving(create_app(DirectorySettings(database_url=fresh_database_url))) as served:
        yield served


@contextlib.asynccontextmanager
async def browser(locale: str = "en-CA", **options: Any) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium with an empty user-data dir, in ``locale``."""
    async with async_playwright() as playwright:
        with tempfile.TemporaryDirectory(prefix="eo-chromium-") as profile:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path(),
                args=CHROMIUM_ARGS,
                headless=True,
                locale=locale,
                viewport={"width": 1100, "height": 900},
                **options,
            )
            try:
                yield context
            finally:
                await context.close()


async def open_page(context: BrowserContext, url: str) -> Page:
    page = context.pages[0] if context.pages else await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url)
    # The taxonomy has loaded: the service checkboxes are there.
    await expect(page.locator("#services input[type=checkbox]").first).to_be_attached()
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    results = await Axe().run(page, options=AXE_OPTIONS)
    violations: list[dict[str, Any]] = results.response["violations"]
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in violations
    )


async def search_community(page: Page, name: str) -> None:
    await page.fill("#community", name)
    await page.click("#search-button")


async def add_site_details(database_url: str) -> None:
    """Hours, a phone number and a verification date on Canadian Career Academy's site."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE directory.site SET phone = '613-555-0100', last_verified = '2026-10-15',"
            ' hours = \'[{"weekday": "mon", "opens": "08:30", "closes": "16:30"},'
            ' {"weekday": "tue", "opens": "08:30", "closes": "16:30"}]\'::jsonb,'
            " accessibility = '{wheelchair_access}' WHERE id = $1",
            CCA_SITE,
        )
    finally:
        await conn.close()


# -- the tests ------------------------------------------------------------------------------------


async def test_search_from_almonte_lists_canadian_career_academy_first(
    finder, fresh_database_url
) -> None:
    url, _ = finder
    await add_site_details(fresh_database_url)
    async with browser() as context:
        page = await open_page(context, url)
        # Suggestions as you type, from the gazetteer.
        await page.fill("#community", "Almo")
        await expect(page.locator("#community-suggestions option[value=Almonte]")).to_be_attached()
        await search_community(page, "Almonte")

        results = page.locator("#result-list > li")
        await expect(results).to_have_count(3)
        first = results.first
        await expect(first.locator("h3")).to_contain_text("Canadian Career Academy")
        await expect(first.locator(".provider")).to_have_text("Canadian Career Academy")
        await expect(first).to_contain_text("Carleton Place")
        await expect(first).to_contain_text("613-555-0100")
        await expect(first).to_contain_text(f"Monday 08:30{EN_DASH}16:30")
        await expect(first).to_contain_text("October 15, 2026")
        await expect(first).to_contain_text("Wheelchair")
        directions = first.get_by_role("link", name="Directions to Canadian Career Academy")
        assert (await directions.get_attribute("href") or "").startswith(
            "https://www.openstreetmap.org/directions?route="
        )
        distances = [
            float(text.split()[-2].replace(",", "."))
            for text in await page.locator("#result-list .distance").all_inner_texts()
        ]
        assert distances == sorted(distances)
        assert distances[0] < 20, distances
        await expect(page.locator("#status")).to_have_text("3 offices found near Almonte.")
        await screenshot(page, "almonte-results-en")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_french_toggle_and_the_browser_language(finder) -> None:
    url, _ = finder
    async with browser() as context:
        page = await open_page(context, url)
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await page.click("#language-toggle")
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await expect(page.locator("h1")).to_have_text(
            f"Trouver un bureau d{APOSTROPHE}Emploi Ontario"
        )
        await expect(page.get_by_label("Code postal")).to_be_visible()
        await expect(page.get_by_label("Localité")).to_be_visible()
        # Service names come from the taxonomy, in French.
        await expect(page.get_by_label("Recherche d'emploi")).to_be_attached()
        await search_community(page, "Perth")
        await expect(page.locator("#status")).to_have_text("3 bureaux trouvés près de Perth.")
        first = page.locator("#result-list > li").first
        await expect(first.locator("h3")).to_contain_text("Community Employment Services")
        await expect(first).to_contain_text("Téléphone")
        await expect(first).to_contain_text("Itinéraire vers")
        await screenshot(page, "perth-results-fr")
        # Back to English: the results are re-labelled in place.
        await page.click("#language-toggle")
        await expect(first).to_contain_text("Directions to")
        # The choice is remembered.
        await page.click("#language-toggle")
        await page.reload()
        await expect(page.locator("html")).to_have_attribute("lang", "fr")

    # A browser in French opens the page in French.
    async with browser(locale="fr-CA") as context:
        page = await open_page(context, url)
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await expect(page.locator("#search-button")).to_have_text("Rechercher")
        await expect(page.locator("#language-toggle")).to_have_text("English")


async def test_keyboard_only_search_with_visible_focus(finder) -> None:
    url, _ = finder
    async with browser() as context:
        page = await open_page(context, url)
        focused: list[str] = []
        outlines: list[str] = []
        for _ in range(4):  # skip link, language toggle, postal code, community
            await page.keyboard.press("Tab")
            focused.append(
                await page.evaluate("document.activeElement.id || document.activeElement.className")
            )
            outlines.append(
                await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            )
        assert focused == ["skip-link", "language-toggle", "postal-code", "community"], focused
        assert "none" not in outlines, outlines  # focus is always visible
        await page.keyboard.type("Almonte")
        await page.keyboard.press("Enter")  # submits the form
        await expect(page.locator("#result-list > li")).to_have_count(3)
        # Focus moves to the results, so a keyboard or screen-reader user lands on them.
        assert await page.evaluate("document.activeElement.id") == "results-heading"
        await expect(page.locator("#result-list > li").first).to_contain_text(
            "Canadian Career Academy"
        )
        # Tab from the results heading reaches the first result's directions link.
        await page.keyboard.press("Tab")
        link = await page.evaluate("document.activeElement.textContent")
        assert link.startswith("Directions to Canadian Career Academy"), link
        # The filters are reachable too: Shift+Tab back into the form, Space ticks a box.
        await page.focus("#accepting")
        await page.keyboard.press("Space")
        assert await page.is_checked("#accepting")
        await screenshot(page, "keyboard-search")


async def test_axe_finds_no_violations(finder) -> None:
    url, _ = finder
    async with browser() as context:
        page = await open_page(context, url)
        checked = {"empty page": await axe_violations(page)}
        await search_community(page, "Almonte")
        await expect(page.locator("#result-list > li")).to_have_count(3)
        checked["results"] = await axe_violations(page)
        await page.fill("#community", "")
        await page.fill("#postal-code", "K0A 9Z9")
        await page.click("#search-button")
        await expect(page.locator("#origin-error")).not_to_be_empty()
        checked["error message"] = await axe_violations(page)
        await page.click("#language-toggle")
        checked["French"] = await axe_violations(page)
        # Control: the scanner does find a violation when there is one.
        await page.evaluate(
            "document.querySelector('main').append(Object.assign("
            "document.createElement('input'), {type: 'text'}))"
        )
        control = await axe_violations(page)
    for state, violations in checked.items():
        assert violations == [], f"{state}:\n{describe(violations)}"
    assert "label" in {v["id"] for v in control}, describe(control)


async def test_clear_messages_for_unknown_places_no_results_and_an_outage(finder) -> None:
    url, stop = finder
    async with browser() as context:
        page = await open_page(context, url)
        # Nothing given.
        await page.click("#search-button")
        await expect(page.locator("#origin-error")).to_have_text(
            "Enter a postal code or a community, or use your location."
        )
        # An unknown postal code: the field is marked and focused.
        await page.fill("#postal-code", "K0A 9Z9")
        await page.click("#search-button")
        await expect(page.locator("#origin-error")).to_contain_text(
            "The postal code “K0A 9Z9” was not found"
        )
        await expect(page.locator("#postal-code")).to_have_attribute("aria-invalid", "true")
        assert await page.evaluate("document.activeElement.id") == "postal-code"
        # Not a postal code at all.
        await page.fill("#postal-code", "12345")
        await page.click("#search-button")
        await expect(page.locator("#origin-error")).to_contain_text("is not a Canadian postal code")
        # An unknown community.
        await page.fill("#community", "Atlantis")
        await page.click("#search-button")
        await expect(page.locator("#origin-error")).to_contain_text(
            "The community “Atlantis” was not found"
        )
        await screenshot(page, "unknown-community")
        # No results: no Lanark County office serves clients in French.
        await page.fill("#community", "Almonte")
        await page.check("input[name=language][value=fr]")
        await page.click("#search-button")
        await expect(page.locator("#status")).to_have_text(
            "No office matches these filters near Almonte. Try fewer filters."
        )
        await expect(page.locator("#result-list > li")).to_have_count(0)
        await screenshot(page, "no-results")
        # The service goes down under the open page.
        await stop()
        await page.check("input[name=language][value='']")
        await page.click("#search-button")
        await expect(page.locator("#error")).to_have_text(
            "The office directory is not answering right now. Please try again in a minute."
        )
        await screenshot(page, "service-down")


async def test_my_location_on_a_phone_and_the_printed_list(finder) -> None:
    url, _ = finder
    async with browser(geolocation=ALMONTE, permissions=["geolocation"]) as context:
        page = await open_page(context, url)
        await page.set_viewport_size({"width": 375, "height": 740})
        await page.click("#use-location")
        await expect(page.locator("#result-list > li")).to_have_count(3)
        await expect(page.locator("#result-list > li").first).to_contain_text(
            "Canadian Career Academy"
        )
        await expect(page.locator("#status")).to_have_text("3 offices found near your location.")
        # Nothing wider than the phone's screen.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375
        await screenshot(page, "phone-my-location")
        # Printed: the list only, no form, no buttons, no links to follow.
        await page.emulate_media(media="print")
        assert not await page.is_visible("#search-form")
        assert not await page.is_visible(".directions")
        assert await page.is_visible("#result-list")
        assert await page.is_visible("#status")  # what the list is: "3 offices found near ..."
        await screenshot(page, "printed-list")
