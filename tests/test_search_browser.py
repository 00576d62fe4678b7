"""The search page in a real browser: headless Chromium driven by Selenium.

The server (tools/serve.py's application, on uvicorn) runs in a thread on a
free localhost port over generated pedestrians with a tiny model trained to
find them. The test types one person's caption, checks that the first
result is that person's image, loads more results, opens the explanation,
and checks the bad-input cases.

Chromium and its chromedriver come from the system (Debian's ``chromium``
and ``chromium-driver``); Selenium is pointed at that driver, so nothing is
downloaded. Without them the test is skipped, except in CI (``CI=true``),
where it fails: ``.ci/run`` installs them. ``TBPS_SCREENSHOT=file.png``
saves the page with its results and an open explanation.
"""

import os
import shutil

import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
WAIT_S = 60


def _require(what: str, found: bool) -> None:
    if found:
        return
    message = (
        f'{what} is not installed (Debian: apt-get install chromium chromium-driver)'
    )
    if IN_CI:
        pytest.fail(f'CI=true but {message}; .ci/run installs it', pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope='module')
def server(search_setup, tmp_path_factory):
    """The app of tools/serve.py on uvicorn, in a thread, on a free port."""
    from tbps_mm.apis import TBPSInferencer
    from tbps_mm_serve import LocalServer, create_app

    inferencer = TBPSInferencer(
        search_setup['config'], search_setup['checkpoint'], show_progress=False
    )
    index = tmp_path_factory.mktemp('browser_index') / 'index.npz'
    inferencer.index(search_setup['gallery'], index_file=str(index))
    with LocalServer(create_app(inferencer), start_timeout_s=WAIT_S) as url:
        yield url


@pytest.fixture(scope='module')
def browser():
    _require('chromium', CHROMIUM is not None)
    _require('chromedriver', CHROMEDRIVER is not None)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require('selenium (pip install selenium)', False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        '--headless=new',
        '--no-sandbox',  # CI containers run as root
        '--disable-dev-shm-usage',
        '--disable-gpu',
        '--window-size=1280,900',
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def _wait(driver, condition, message):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def _search(driver, text):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, 'query')
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, 'search').click()


def _fetch(driver, url):
    """Status and JSON detail of a request made by the page itself."""
    return driver.execute_async_script(
        'const done = arguments[arguments.length - 1];'
        'fetch(arguments[0])'
        '.then(async (r) => done([r.status, (await r.json()).detail]))'
        '.catch((e) => done([0, String(e)]));',
        url,
    )


def test_search_page_in_chromium(browser, server, search_setup):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server + '/')
    assert 'person search' in driver.title

    # A caption of one generated person: that person's image comes first.
    person = search_setup['people'][6]
    _search(driver, person['captions'][0])
    results = _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#results .result') or False,
        'no results appeared',
    )
    first = results[0]
    assert first.get_attribute('data-name').startswith(f'person_{person["pid"]}_')
    assert 'score' in first.text and '#1' in first.text
    image = first.find_element(By.TAG_NAME, 'img')
    _wait(
        driver,
        lambda d: d.execute_script(
            'return arguments[0].complete && arguments[0].naturalWidth', image
        ),
        'the first result image did not load',
    )
    assert driver.execute_script('return arguments[0].naturalHeight', image) == 96
    assert len(results) == 12  # one page
    assert not driver.find_element(By.ID, 'error').is_displayed()

    # Paging: the rest of the 16 images, each once.
    driver.find_element(By.ID, 'more').click()
    _wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '#results .result')) == 16,
        'the second page did not load',
    )
    ids = [
        r.get_attribute('data-id')
        for r in driver.find_elements(By.CSS_SELECTOR, '#results .result')
    ]
    assert sorted(map(int, ids)) == list(range(16))
    assert not driver.find_element(By.ID, 'more').is_displayed()

    # The explanation of the first result: the figure and the words per part.
    driver.find_elements(By.CSS_SELECTOR, '#results .result')[0].click()
    figure = driver.find_element(By.ID, 'explain-figure')
    _wait(
        driver,
        lambda d: (
            d.find_element(By.ID, 'explanation').is_displayed()
            and d.execute_script('return arguments[0].naturalWidth', figure) > 0
        ),
        'the explanation did not appear',
    )
    title = driver.find_element(By.ID, 'explain-title').text
    assert first.get_attribute('data-name') in title and 'score' in title
    parts = driver.find_elements(By.CSS_SELECTOR, '#explain-parts .part')
    assert len(parts) == 3  # K part queries
    words = set(person['captions'][0].split())
    assert all(
        w.text.split()[0] in words
        for part in parts
        for w in part.find_elements(By.CSS_SELECTOR, '.word')
    )

    if os.environ.get('TBPS_SCREENSHOT'):
        # docs/images/serve_page.png is this view (see docs/deploy.md).
        driver.save_screenshot(os.environ['TBPS_SCREENSHOT'])

    # Bad input: a message on the page, no results.
    for text, message in (('   ', 'query is empty'), ('red ' * 200, 'at most 500')):
        _search(driver, text)
        error = driver.find_element(By.ID, 'error')
        _wait(driver, lambda d, e=error: e.is_displayed(), f'no error for {text!r}')
        assert message in error.text and '(HTTP 400)' in error.text
        assert driver.find_elements(By.CSS_SELECTOR, '#results .result') == []

    # An unknown result id and files that are not indexed images: 4xx with
    # a message, whether fetched by the page or opened directly.
    for url, status, message in (
        ('/api/explain?q=a%20man&id=999', 404, 'Unknown image id'),
        ('/api/image/999', 404, 'Unknown image id'),
        ('/api/image/..%2F..%2Fetc%2Fpasswd', 404, 'indexed images only'),
        ('/api/image/' + person['path'].replace('/', '%2F'), 404, 'indexed images'),
        ('/etc/passwd', 404, 'indexed images only'),
    ):
        got_status, detail = _fetch(driver, url)
        assert got_status == status and message in detail, (url, got_status, detail)
    driver.get(server + '/api/image/999')
    assert 'Unknown image id' in driver.find_element(By.TAG_NAME, 'body').text


@pytest.fixture(scope='module')
def track_server(track_setup):
    """tools/serve.py --tracks's app on uvicorn, over tiny indexed videos."""
    from tbps_mm.apis import TrackGallery
    from tbps_mm_serve import LocalServer, create_track_app

    gallery = TrackGallery.open(track_setup['index'], track_setup['fingerprint'])
    app = create_track_app(gallery, track_setup['encode_text'])
    with LocalServer(app, start_timeout_s=WAIT_S) as url:
        yield dict(url=url, gallery=gallery)


def _fetch_text(driver, url):
    """Status and body text of a request made by the page itself."""
    return driver.execute_async_script(
        'const done = arguments[arguments.length - 1];'
        'fetch(arguments[0])'
        '.then(async (r) => done([r.status, await r.text()]))'
        '.catch((e) => done([0, String(e)]));',
        url,
    )


def test_track_search_page_in_chromium(browser, track_server, track_setup):
    import csv
    import io
    import json

    from selenium.webdriver.common.by import By

    driver, gallery = browser, track_server['gallery']
    driver.get(track_server['url'] + '/')
    assert 'video track search' in driver.title
    boxes = _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#cameras input.camera') or False,
        'the camera filters did not appear',
    )
    assert [b.get_attribute('value') for b in boxes] == ['1', '2']
    query = 'a woman wearing black pants with a red shirt .'

    def cards():
        return driver.find_elements(By.CSS_SELECTOR, '#results .track')

    # every track, best first, each crop loaded
    _search(driver, query)
    _wait(driver, lambda d: len(cards()) == len(gallery), 'no tracks appeared')
    vector = track_setup['encode_text'](query)
    want = [h['key'] for h in gallery.search(vector, 100)]
    assert [c.get_attribute('data-key') for c in cards()] == want
    image = cards()[0].find_element(By.TAG_NAME, 'img')
    _wait(
        driver,
        lambda d: d.execute_script(
            'return arguments[0].complete && arguments[0].naturalWidth', image
        ),
        'the first crop did not load',
    )

    # the crop and the "frame N" link open the track's best frame, box drawn
    first = gallery.record(want[0])
    link = cards()[0].find_element(By.CSS_SELECTOR, 'a.frame-link')
    href = link.get_attribute('href')
    assert href.startswith(track_server['url'] + '/api/frame?key=')
    assert link.get_attribute('target') == '_blank'
    assert link.text == f'frame {first["best_frame"]}'
    assert image.find_element(By.XPATH, '..').get_attribute('href') == href
    size = driver.execute_async_script(
        'const done = arguments[arguments.length - 1];'
        'const img = new Image();'
        'img.onload = () => done([img.naturalWidth, img.naturalHeight]);'
        'img.onerror = () => done([0, 0]);'
        'img.src = arguments[0];',
        href,
    )
    from tbps_mm.video import probe_video

    info = probe_video(first['video'])
    assert size == [info['width'], info['height']]

    # camera 2 only, within a time window: what the gallery gives
    boxes[1].click()
    driver.find_element(By.ID, 'time-from').send_keys('10:00:46')
    driver.find_element(By.ID, 'time-to').send_keys('10:00:47')
    from datetime import time

    want = gallery.search(
        vector, 100, cameras=['2'], time_from=time(10, 0, 46), time_to=time(10, 0, 47)
    )
    assert 0 < len(want) < len(gallery)
    _search(driver, query)
    _wait(
        driver,
        lambda d: (
            [c.get_attribute('data-key') for c in cards()] == [h['key'] for h in want]
        ),
        'the filtered tracks did not appear',
    )
    assert {c.get_attribute('data-camera') for c in cards()} == {'2'}

    # the exports hold exactly the tracks shown
    csv_link = driver.find_element(By.ID, 'export-csv')
    assert csv_link.is_displayed()
    status, text = _fetch_text(driver, csv_link.get_attribute('href'))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and [r['key'] for r in rows] == [h['key'] for h in want]
    status, text = _fetch_text(
        driver, driver.find_element(By.ID, 'export-json').get_attribute('href')
    )
    assert status == 200 and [h['key'] for h in json.loads(text)] == [
        h['key'] for h in want
    ]

    # "similar" on the first track: its neighbours under the same filters
    first = cards()[0].get_attribute('data-key')
    cards()[0].find_element(By.CSS_SELECTOR, 'button.similar').click()
    similar = gallery.search(
        gallery.vectors([first])[0], 100, cameras=['2'], time_from=time(10, 0, 46),
        time_to=time(10, 0, 47), exclude=[first],
    )  # fmt: skip
    _wait(
        driver,
        lambda d: 'similar to' in d.find_element(By.ID, 'status').text,
        'the similar tracks did not appear',
    )
    assert [c.get_attribute('data-key') for c in cards()] == [h['key'] for h in similar]

    # bad filters: the message on the page, no tracks
    driver.find_element(By.ID, 'time-to').clear()
    driver.find_element(By.ID, 'time-to').send_keys('25:99')
    _search(driver, query)
    error = driver.find_element(By.ID, 'error')
    _wait(driver, lambda d: error.is_displayed(), 'no error for a bad time')
    assert 'time_to must be' in error.text and '(HTTP 400)' in error.text
    assert cards() == []
