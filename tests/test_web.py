"""The live page in a real browser (Debian's headless Chromium driven by Selenium): upload a render,
move the light dial and the yaw slider and see the image follow, matching `Editor.relight`, and
refined by the fused edit once the sliders rest; a corrupt upload shows a message and the server
keeps serving; two tabs keep their own state; stale requests are dropped; session folders go when
the tab closes."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylerelight.edit import Editor
from stylerelight.imageio import gan_to_uint8
from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject
from stylerelight.web import create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (`sudo apt-get install chromium chromium-driver`; "
           "`make setup` installs them when run as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def editor():
    torch.set_num_threads(1)
    return Editor.from_pretrained()


@pytest.fixture(scope="module")
def server(editor, tmp_path_factory):
    import uvicorn

    tmp = tmp_path_factory.mktemp("sessions")
    app = create_app(lambda: editor, tmp_root=str(tmp))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", app, tmp
    srv.should_exit = True
    th.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1500,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


def _wait(cond, timeout=60.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _img(drv, elem_id) -> np.ndarray:
    src = drv.find_element("id", elem_id).get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def _set_range(drv, elem_id, value):
    drv.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                       "e.dispatchEvent(new Event('input'));", elem_id, str(value))


def _open(drv, url):
    drv.get(url)
    _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1'"), what="page ready")


def _shown(drv):
    return int(drv.find_element("id", "result").get_attribute("data-seq") or 0)


def _settle(drv):
    """Wait until the newest request sent is the one displayed."""
    _wait(lambda: _shown(drv) == drv.execute_script("return seq"), what="the newest image")


def test_page_follows_the_sliders_and_matches_the_editor(server, browser, editor, tmp_path):
    url, app, tmp = server
    render = render_portrait(sample_subject(1_000_777), sample_envmap(3, kind="indoor"), Camera(yaw=8), 64, spp=16)
    Image.fromarray(render).save(tmp_path / "face.png")
    _open(browser, url)
    browser.find_element("id", "photo").send_keys(str(tmp_path / "face.png"))
    _settle(browser)
    _wait(lambda: _shown(browser) > 0, what="first image")
    first = _img(browser, "result")
    # the same photo through the API (inverted the same way: a 64^2 square is an aligned crop)
    lat = editor.invert(render, aligned=True)
    browser.execute_script("document.getElementById('light').value = 'studio';"
                           "document.getElementById('light').dispatchEvent(new Event('change'));")
    _set_range(browser, "rotate-light", 90)
    _set_range(browser, "yaw", 12)
    _settle(browser)
    shown = _img(browser, "result")[::4, ::4]  # the page shows 4x nearest-neighbour upscaling
    from stylerelight.web.app import ENVMAP_KINDS

    env = sample_envmap(100 + ENVMAP_KINDS.index("studio"), kind="studio")
    ref = gan_to_uint8(editor.relight(lat, env, yaw=12.0, rotate_light=90.0))[0]
    assert np.abs(shown.astype(int) - ref).max() <= 1
    assert np.abs(first[::4, ::4].astype(int) - ref).mean() > 0.5  # the picture changed
    # a quick drag: many moves, only the newest must end up displayed
    for v in range(0, 200, 10):
        _set_range(browser, "rotate-light", v)
    _settle(browser)
    lat_ms = browser.execute_script("return window.stylerelight.latencies")
    print(f"slider move -> new image displayed: median {np.median(lat_ms):.0f} ms over {len(lat_ms)} updates")
    ref = gan_to_uint8(editor.relight(lat, env, yaw=12.0, rotate_light=190.0))[0]
    assert np.abs(_img(browser, "result")[::4, ::4].astype(int) - ref).max() <= 1
    assert len(lat_ms) < 22  # stale requests were dropped (20 moves + the earlier ones)
    # the downloads: what the page shows, and the refined (fused) edit of the same request
    import urllib.error
    import urllib.request

    sid = browser.execute_script("return sid")
    get = lambda q: np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(  # noqa: E731
        f"{url}/api/session/{sid}/download/photo{q}", timeout=120).read())).convert("RGB")).astype(int)
    assert np.abs(get("") - ref).max() <= 1
    fused = Editor(editor.G, editor.encoder, editor.mapper, method="fused")
    want = gan_to_uint8(fused.relight(lat, env, yaw=12.0, rotate_light=190.0))[0]
    got = get("?method=fused")
    assert np.abs(got - want).mean() < 0.5 and np.abs(got - ref).mean() > 0.5
    with pytest.raises(urllib.error.HTTPError, match="400"):
        get("?method=magic")
    shot = os.environ.get("STYLERELIGHT_SCREENSHOT")  # docs/live_page.png is made this way
    if shot:
        browser.save_screenshot(shot)


def test_refinement_follows_the_resting_sliders_with_the_fused_edit(server, browser, editor, tmp_path):
    url, _, _ = server
    render = render_portrait(sample_subject(1_000_778), sample_envmap(4, kind="studio"), Camera(yaw=-6), 64, spp=16)
    Image.fromarray(render).save(tmp_path / "face.png")
    _open(browser, url)
    assert browser.find_element("id", "refine").is_displayed()
    browser.find_element("id", "photo").send_keys(str(tmp_path / "face.png"))
    _wait(lambda: _shown(browser) > 0, what="first image")
    browser.find_element("id", "refine").click()
    for v in range(0, 13, 2):  # a drag while the first refinement (seconds) runs: only the resting request's comes
        _set_range(browser, "yaw", v)
    last = browser.execute_script("return seq")
    _wait(lambda: _shown(browser) == last and
          browser.find_element("id", "result").get_attribute("data-refined") == "1", timeout=300,
          what="the refined image of the newest request")
    refined = browser.execute_script("return window.stylerelight.refined")
    assert refined[-1] == last and len(refined) <= 2  # the drag's stale refinements were not sent
    shown = _img(browser, "result")[::4, ::4].astype(int)
    from stylerelight.web.app import REFINE_GRID, REFINE_LIGHT_GRID

    assert editor.method == "mapper"  # the page's editor: its refinement is the fused edit on a twin
    lat = editor.invert(render, aligned=True)
    want = gan_to_uint8(editor.twin("fused", turn_grid=REFINE_GRID, light_grid=REFINE_LIGHT_GRID).relight(
        lat, None, yaw=12.0))[0]
    fast = gan_to_uint8(editor.relight(lat, None, yaw=12.0))[0]
    assert np.abs(shown - want).mean() < 0.5 and np.abs(shown - fast).mean() > 0.5
    # the download is what the page shows
    import urllib.request

    sid = browser.execute_script("return sid")
    got = np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(
        f"{url}/api/session/{sid}/download/photo?method=refined", timeout=120).read())).convert("RGB")).astype(int)
    assert np.abs(got - shown).max() <= 1


def test_grid_ring_orders_the_other_grid_rotations_nearest_first():
    from stylerelight.web.app import grid_ring

    rot = [m["rotate"] for m in grid_ring({"seq": 3, "rotate": 37}, 15.0)]
    assert len(rot) == 22 and rot[:4] == [15.0, 60.0, 0.0, 75.0] and not {30.0, 45.0} & set(rot)
    on = grid_ring({"seq": 3, "rotate": 360 + 15, "yaw": 4}, 15.0)
    assert len(on) == 23 and [m["rotate"] for m in on[:2]] in ([0.0, 30.0], [30.0, 0.0]) and on[0]["yaw"] == 4


def _made(req: dict) -> set:
    """The (rotation, yaw, pitch) grid points whose re-render changes the page's refinement of `req` makes."""
    from stylerelight.mapper.rerender import grid_corners, rotation_corners
    from stylerelight.web.app import REFINE_GRID, REFINE_LIGHT_GRID

    return {(r, y, p) for r, _ in rotation_corners(req.get("rotate", 0), REFINE_LIGHT_GRID)
            for (y, p), _ in grid_corners(req.get("yaw", 0), req.get("pitch", 0), REFINE_GRID)}


def test_slider_ring_covers_each_slider_with_the_others_kept_nearest_first():
    """After the refinements of a request and of its ring, every position of each slider (the others as they
    are) is read off grid points already made; no grid point is made twice; nearer ones come first."""
    from stylerelight.web.app import REFINE_GRID, REFINE_LIGHT_GRID, slider_ring

    spans = {"yaw": (-49, 40), "pitch": (-17, 22)}
    for req in ({"seq": 2, "rotate": 37, "yaw": 4, "pitch": 0}, {"seq": 2, "rotate": 330, "yaw": -15, "pitch": 5.5}):
        ring = slider_ring(req, spans)
        made = [_made(m) for m in [req] + ring]
        assert all(m["seq"] == 2 for m in ring) and len({tuple(sorted(m.items())) for m in ring}) == len(ring)
        assert all(m - made[0] for m in made[1:])  # each one adds grid points the request did not make
        have = set().union(*made)
        moves = [{**req, "rotate": r / 2} for r in range(720)] + \
            [{**req, "yaw": y} for y in range(spans["yaw"][0], spans["yaw"][1] + 1)] + \
            [{**req, "pitch": p} for p in range(spans["pitch"][0], spans["pitch"][1] + 1)]
        assert all(_made(m) <= have for m in moves)
        steps = {"rotate": REFINE_LIGHT_GRID, "yaw": REFINE_GRID[0], "pitch": REFINE_GRID[1]}
        dist = [max(min(abs(m[k] - req[k]) % 360, 360 - abs(m[k] - req[k]) % 360) / steps[k] for k in steps)
                for m in ring]
        assert dist == sorted(dist) and dist[0] <= 1
    # a light ring alone is what grid_ring gives; views only where the slider's span needs them
    ring = slider_ring({"rotate": 0, "yaw": 0, "pitch": 0}, {"yaw": (0, 0), "pitch": (0, 0)})
    assert [m["rotate"] for m in ring] == [m["rotate"] for m in grid_ring_of(0)]
    assert slider_ring({"rotate": 0, "yaw": 0, "pitch": 0}, {}) == ring


def grid_ring_of(rotate):
    from stylerelight.web.app import REFINE_LIGHT_GRID, grid_ring

    return grid_ring({"rotate": rotate, "yaw": 0, "pitch": 0}, REFINE_LIGHT_GRID)


def test_a_resting_page_refines_the_sliders_ahead(server, browser, editor, tmp_path):
    """After a refinement, while the sliders rest, the server refines the light grid's other rotations of that
    env map and view and the turn grid's views along the yaw and pitch sliders one by one (the page counts
    them); a rotation between grid rotations, and then a turn between grid views, are refined as an
    independent twin with the page's grids edits them."""
    from stylerelight.web.app import ENVMAP_KINDS, REFINE_GRID, REFINE_LIGHT_GRID, slider_ring

    url, _, _ = server
    render = render_portrait(sample_subject(1_000_779), sample_envmap(6, kind="studio"), Camera(yaw=4), 64, spp=16)
    Image.fromarray(render).save(tmp_path / "face.png")
    _open(browser, url)
    browser.find_element("id", "photo").send_keys(str(tmp_path / "face.png"))
    _wait(lambda: _shown(browser) > 0, what="first image")
    browser.execute_script("const e = document.getElementById('light'); e.value = 'studio';"
                           "e.dispatchEvent(new Event('change'));")
    browser.find_element("id", "refine").click()
    last = browser.execute_script("return seq")
    spans = {k: tuple(int(browser.find_element("id", k).get_attribute(a)) for a in ("min", "max"))
             for k in ("yaw", "pitch")}
    n = len(slider_ring({"rotate": 0, "yaw": 0, "pitch": 0}, spans))
    assert n > len(grid_ring_of(0)) + 4  # views along both turn sliders besides the rotations
    _wait(lambda: browser.execute_script("return window.stylerelight.ahead") == [last, n, n], timeout=500,
          what=f"the {n} other grid rotations and views refined ahead")
    assert browser.find_element("id", "ahead").text == "sliders refined over their ranges"
    lat = editor.invert(render, aligned=True)
    env = sample_envmap(100 + ENVMAP_KINDS.index("studio"), kind="studio")  # the page's "studio"
    twin = editor.twin("fused", turn_grid=REFINE_GRID, light_grid=REFINE_LIGHT_GRID)
    for slider, value, edit in (("rotate-light", 37, {"rotate_light": 37.0}), ("rotate-light", 0, {}),
                                ("yaw", -7, {"yaw": -7.0})):
        _set_range(browser, slider, value)
        last = browser.execute_script("return seq")
        t0 = time.time()
        _wait(lambda: _shown(browser) == last and  # noqa: B023 - read in this iteration
              browser.find_element("id", "result").get_attribute("data-refined") == "1", timeout=120,
              what=f"the refined {slider} {value}")
        print(f"{slider} {value}: refined frame shown {time.time() - t0:.2f} s after the move")
        want = gan_to_uint8(twin.relight(lat, env, **edit))[0]
        assert np.abs(_img(browser, "result")[::4, ::4].astype(int) - want).mean() < 0.5, (slider, value)


def test_a_photo_that_cannot_be_refined_says_so(server, browser):
    """tests/data/not_a_face_64.png: the head model does not fit it, so the fused edit falls back to the
    mapper's; the refined frame is that edit, and the page says it is not refined."""
    url, _, _ = server
    _open(browser, url)
    browser.find_element("id", "photo").send_keys(str(Path(__file__).parent / "data" / "not_a_face_64.png"))
    _wait(lambda: _shown(browser) > 0, what="first image")
    fast = _img(browser, "result").astype(int)
    browser.find_element("id", "refine").click()
    last = browser.execute_script("return seq")
    _wait(lambda: _shown(browser) == last and
          browser.find_element("id", "result").get_attribute("data-refined") == "1", timeout=300,
          what="the refinement's answer")
    msg = browser.find_element("id", "message").text
    assert msg.startswith("not refined: the head model does not fit this crop as a face"), msg
    assert "(not refined)" in browser.find_element("id", "latency").text
    assert np.abs(_img(browser, "result").astype(int) - fast).max() <= 1  # the mapper's edit


def test_bad_uploads_show_a_message_and_the_server_keeps_serving(server, browser, tmp_path):
    url, _, _ = server
    _open(browser, url)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    browser.find_element("id", "photo").send_keys(str(tmp_path / "broken.png"))
    msg = _wait(lambda: browser.find_element("id", "message").text, what="a message")
    assert "not an image" in msg
    (tmp_path / "broken.exr").write_bytes(b"v/1\x01" + b"\x07" * 64)
    browser.find_element("id", "light-file").send_keys(str(tmp_path / "broken.exr"))
    msg = _wait(lambda: "broken.exr" in browser.find_element("id", "message").text and
                browser.find_element("id", "message").text, what="the corrupt env map message")
    assert "unreadable" in msg
    from stylerelight.lighting import save_envmap

    save_envmap(np.zeros((8, 16, 3), np.float32), tmp_path / "black.hdr")
    browser.find_element("id", "light-file").send_keys(str(tmp_path / "black.hdr"))
    _wait(lambda: "black" in browser.find_element("id", "message").text, what="the black env map message")
    # still serving: a sample photo works
    browser.execute_script("const s = document.getElementById('sample'); s.value = 'heldout_1';"
                           "s.dispatchEvent(new Event('change'));")
    _wait(lambda: _shown(browser) > 0, what="an image after the errors")


def test_two_tabs_keep_their_own_photo(server, browser, tmp_path):
    url, app, tmp = server
    a = render_portrait(sample_subject(1_000_901), sample_envmap(1, kind="studio"), Camera(yaw=-10), 64, spp=16)
    b = render_portrait(sample_subject(1_000_902), sample_envmap(2, kind="sun_sky"), Camera(yaw=12), 64, spp=16)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    _open(browser, url)
    browser.find_element("id", "photo").send_keys(str(tmp_path / "a.png"))
    _wait(lambda: _shown(browser) > 0, what="tab 1 image")
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    _open(browser, url)
    browser.find_element("id", "photo").send_keys(str(tmp_path / "b.png"))
    _wait(lambda: _shown(browser) > 0, what="tab 2 image")
    img_b = _img(browser, "input")
    browser.switch_to.window(first_tab)
    _set_range(browser, "yaw", 5)
    _settle(browser)
    img_a = _img(browser, "input")
    assert np.abs(img_a.astype(int) - img_b.astype(int)).mean() > 5  # each tab shows its own photo
    assert len(list(Path(tmp).iterdir())) >= 2  # one folder per live session
    browser.switch_to.window(browser.window_handles[-1])
    browser.close()
    browser.switch_to.window(first_tab)
    browser.get("about:blank")  # closes the first tab's session too
    _wait(lambda: not app.state.sessions, what="sessions to end")
    assert not list(Path(tmp).iterdir())  # their folders are gone
