"""FastAPI app for the live page. One Editor serves every browser; each browser tab opens its own
session (photo, latent, uploaded env map, a temporary folder) that ends when its WebSocket closes.

Endpoints (JSON unless said): GET / (the page), GET /api/envmaps, GET /api/samples,
POST /api/session, POST /api/session/{sid}/photo (multipart `file`), POST .../sample/{name},
POST .../light (multipart `file`: .hdr/.exr), GET .../download/photo (PNG), GET .../download/latent
(.pt), WS /ws/{sid} (send {"seq", "light", "rotate", "yaw", "pitch", "exposure", "refine"}; receive
{"seq", "image", "ms"} or {"error"}; with "refine" true, once the sliders rest, also {"seq", "image",
"ms", "refined": true[, "note"]}: the fused edit of that request; "note" when it could not be refined;
then, while they still rest, {"seq", "ahead", "of"}: the grids' rotations and views refined ahead).

Refinement: each slider move is answered by the mapper's edit (milliseconds); when no newer move is
waiting, the server also makes the REFINE_METHOD edit (the mapper's edit mixed with the ray-traced
re-render's change: the most faithful edit on the held-out set, `stylerelight edit`'s default;
docs/editing.md) of the newest request and sends it unless a newer move arrived meanwhile. It runs
on a twin of the Editor with its own lock, so mapper frames never wait for it. Turns use a turn
grid (REFINE_GRID) and the light slider's rotations a light grid (REFINE_LIGHT_GRID): once the grid
views and rotations around a request are made, it is read off them in milliseconds; a new env map
costs a re-render and its inversion per grid view and rotation around the request (about 1.2 s
each), the photo's first refinement its full reconstruction too (6-9 s). While the sliders rest after a
refinement, the server goes on to the light grid's other rotations under the same env map and view, and to
the turn grid's views along the yaw and pitch sliders under the same light (`slider_ring`, nearest first,
one at a time, dropped at the next move), so each slider is then refined in milliseconds over its range.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response

from ..lighting import envmap_preview

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # photos and env maps
STATIC = Path(__file__).parent / "static"
ENVMAP_KINDS = ("studio", "sun_sky", "overcast", "indoor", "colored", "hard")
REFINE_METHOD = "fused"  # the refinement's edit (the Editor's methods)
REFINE_GRID = (15.0, 10.0)  # the refinement's turn grid, degrees (yaw, pitch): the model card's "The turn grid"
REFINE_LIGHT_GRID = 15.0  # its light-rotation grid, degrees (the model card's "The light grid")
DOWNLOAD_METHODS = ("mapper", "fused", "refined")


def rotation_gap(a: float, msg: dict) -> float:
    """Degrees between rotation a (in [0, 360)) and msg's light rotation, the short way round."""
    r = float(msg.get("rotate", 0)) % 360
    return min(abs(a - r), 360 - abs(a - r))


def grid_ring(msg: dict, step: float = REFINE_LIGHT_GRID) -> list[dict]:
    """`msg` at the light grid's other rotations, nearest first: what a resting page refines ahead, so
    that later refinements of the light slider are read off the grid (the one or two grid rotations
    around msg's own are made by its refinement)."""
    def dist(a: float) -> float:
        return rotation_gap(a, msg)

    angles = [k * step % 360 for k in range(math.ceil(360 / step - 1e-9))]
    return [{**msg, "rotate": a} for a in sorted(angles, key=dist) if dist(a) >= step - 1e-9]


def axis_corners(v: float, step: float) -> list[float]:
    """The grid values around v on one axis (one when v is on the grid), as the grids' reads use them."""
    from ..mapper.rerender import grid_corners

    return [c[0] for c, _ in grid_corners(v, 0.0, (step, 1.0))]


def slider_ring(msg: dict, spans: dict, light_step: float = REFINE_LIGHT_GRID,
                grid: tuple[float, float] = REFINE_GRID) -> list[dict]:
    """What a resting page refines ahead after `msg`'s refinement, nearest first (in grid steps): `msg` at
    the light grid's other rotations (grid_ring), and at the turn grid's other views along each turn
    slider's range with the other slider as it is (the one or two grid values around it; spans: the
    sliders' {"yaw": (lo, hi), "pitch": (lo, hi)} in degrees of change). One slider moves at a time and
    each resting move is refined and rings again, so the lines through the request are what the next
    move needs, at a fraction of the whole grid's cost."""
    ring = [(rotation_gap(m["rotate"], msg) / light_step, m) for m in grid_ring(msg, light_step)]
    here = {"yaw": float(msg.get("yaw", 0)), "pitch": float(msg.get("pitch", 0))}
    for axis, other, step, other_step in (("yaw", "pitch", *grid), ("pitch", "yaw", *grid[::-1])):
        if axis not in spans:  # no range known for that slider: rotations only
            continue
        lo, hi = spans[axis]
        own, kept = axis_corners(here[axis], step), axis_corners(here[other], other_step)
        for k in range(math.floor(lo / step), math.ceil(hi / step) + 1):
            v = k * step
            if v not in own:
                ring += [(abs(v - here[axis]) / step, {**msg, axis: v, other: o}) for o in kept]
    return [m for _, m in sorted(ring, key=lambda t: t[0])]


def png_data_url(img: np.ndarray, scale: int = 1) -> str:
    from PIL import Image

    if scale > 1:
        img = np.repeat(np.repeat(img, scale, 0), scale, 1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def apply_exposure(img_u8: np.ndarray, stops: float) -> np.ndarray:
    """Exposure in stops on display sRGB pixels (through linear light)."""
    if not stops:
        return img_u8
    from ..lighting import srgb_decode, srgb_encode

    lin = srgb_decode(img_u8.astype(np.float64) / 255) * 2.0**stops
    return np.clip(np.round(srgb_encode(lin) * 255), 0, 255).astype(np.uint8)


@dataclass
class Session:
    sid: str
    folder: Path
    photo: np.ndarray | None = None
    latent: object = None
    custom_light: object = None
    params: dict = field(default_factory=dict)
    spans: dict = field(default_factory=dict)  # the turn sliders' ranges, as the page sets them (slider_ring)
    created: float = field(default_factory=time.time)
    connected: bool = False


class UserError(ValueError):
    pass


def create_app(editor_factory, max_upload: int = MAX_UPLOAD_BYTES, tmp_root: str | None = None):
    """The app; `editor_factory()` builds the Editor on first use (so the page opens at once)."""
    from ..synth import sample_envmap

    sessions: dict[str, Session] = {}

    @asynccontextmanager
    async def lifespan(_app):
        yield
        for sid in list(sessions):  # the server stops: every session's folder goes
            end(sid)

    app = FastAPI(title="stylerelight", lifespan=lifespan)
    lock = threading.Lock()  # the Editor (torch) runs one request at a time
    refine_lock = threading.Lock()  # ...and its refining twin one refinement at a time, beside it
    state: dict = {}

    def editor():
        with lock:
            if "ed" not in state:
                state["ed"] = editor_factory()
        return state["ed"]

    def refiner():
        """The editor's twin that makes the refined frames (REFINE_METHOD with the turn and light grids)
        and the fused downloads (the same without them)."""
        ed = editor()
        with refine_lock:
            if "refiner" not in state:
                state["refiner"] = ed.twin(REFINE_METHOD, turn_grid=REFINE_GRID, light_grid=REFINE_LIGHT_GRID)
        return state["refiner"]

    envmaps = {k: sample_envmap(100 + i, kind=k) for i, k in enumerate(ENVMAP_KINDS)}

    def session(sid: str) -> Session:
        s = sessions.get(sid)
        if s is None:
            raise UserError("this page's session has ended; reload the page")
        return s

    def end(sid: str) -> None:
        s = sessions.pop(sid, None)
        if s is not None:
            shutil.rmtree(s.folder, ignore_errors=True)

    @app.exception_handler(UserError)
    async def _user_error(_request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def read_upload(f: UploadFile) -> bytes:
        data = await f.read(max_upload + 1)
        if len(data) > max_upload:
            raise UserError(f"the file is larger than {max_upload // (1024 * 1024)} MB; upload a smaller one")
        if not data:
            raise UserError("the file is empty")
        return data

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    def static(name: str):
        p = (STATIC / name).resolve()
        if p.parent != STATIC.resolve() or not p.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(p)

    @app.get("/api/envmaps")
    def list_envmaps():
        return {"envmaps": [{"name": k, "thumb": png_data_url(envmap_preview(e))} for k, e in envmaps.items()]}

    @app.get("/api/samples")
    def list_samples():
        return {"samples": sorted(p.stem for p in (STATIC / "samples").glob("*.png"))}

    @app.post("/api/session")
    def new_session():
        for old in [k for k, v in sessions.items() if not v.connected and time.time() - v.created > 600]:
            end(old)  # pages that never opened their WebSocket
        sid = uuid.uuid4().hex
        folder = Path(tempfile.mkdtemp(prefix=f"stylerelight-{sid[:8]}-", dir=tmp_root))
        sessions[sid] = Session(sid, folder)
        ed = editor()
        return {"session": sid, "yaw_range": ed.mapper.pose_range["yaw"], "pitch_range": ed.mapper.pose_range["pitch"]}

    def set_photo(s: Session, img: np.ndarray) -> dict:
        ed = editor()
        aligned = img.shape[0] == img.shape[1] and img.shape[0] <= 2 * ed.resolution
        with lock:
            lat = ed.invert(img, aligned=aligned)
        s.photo, s.latent = img, lat
        from ..recon import light_to_envmap

        rec = lat.reconstruction
        pose = {"yaw": round(float(rec["yaw"]), 1), "pitch": round(float(rec["pitch"]), 1)}
        s.spans = {k: (math.ceil(-ed.mapper.pose_range[k] - v), math.floor(ed.mapper.pose_range[k] - v))
                   for k, v in pose.items()}  # the page's slider ranges (index.html: min, max)
        src_env = light_to_envmap(np.asarray(rec["light"], np.float64), ed.stage)
        crop = lat.info["crop"].numpy()
        return {"input": png_data_url(crop, max(1, 256 // crop.shape[0])),
                "source_light": png_data_url(envmap_preview(src_env)), "aligned": aligned,
                "faces": int(lat.info.get("faces_found", 1)),
                "pose": [pose["yaw"], pose["pitch"]]}

    @app.post("/api/session/{sid}/photo")
    async def upload_photo(sid: str, file: UploadFile = File(...)):  # noqa: B008 - FastAPI's idiom
        s = session(sid)
        data = await read_upload(file)
        from ..align import load_image

        try:
            img = load_image(io.BytesIO(data))
        except ValueError as e:
            raise UserError(f"{file.filename}: not an image we can read ({str(e).split(': ')[-1]})") from None
        try:
            return await asyncio.to_thread(set_photo, s, img)
        except ValueError as e:
            raise UserError(str(e).splitlines()[0]) from None

    @app.post("/api/session/{sid}/sample/{name}")
    async def use_sample(sid: str, name: str):
        s = session(sid)
        p = STATIC / "samples" / f"{name}.png"
        if name not in list_samples()["samples"]:
            raise UserError(f"no sample named {name!r}")
        from ..align import load_image

        return await asyncio.to_thread(set_photo, s, load_image(p))

    @app.post("/api/session/{sid}/light")
    async def upload_light(sid: str, file: UploadFile = File(...)):  # noqa: B008
        s = session(sid)
        data = await read_upload(file)
        suffix = Path(file.filename or "").suffix.lower()
        if suffix not in (".hdr", ".exr"):
            raise UserError(f"{file.filename}: upload an env map as .hdr or .exr")
        path = s.folder / f"light{suffix}"
        path.write_bytes(data)
        from ..edit import load_light_file

        try:
            env = load_light_file(path, editor().stage.num_lights)
            editor().resolve_light(env)  # finite, not black
        except ValueError as e:
            path.unlink(missing_ok=True)
            raise UserError(str(e).splitlines()[0].replace(str(path), file.filename or "env map")) from None
        s.custom_light = env
        return {"thumb": png_data_url(envmap_preview(env))}

    def light_of(s: Session, name: str):
        if name == "source":
            return None
        if name == "custom":
            if s.custom_light is None:
                raise UserError("no env map uploaded yet")
            return s.custom_light
        if name not in envmaps:
            raise UserError(f"unknown env map {name!r}")
        return envmaps[name]

    def render(s: Session, p: dict, method: str = "mapper") -> np.ndarray:
        """The edit as the page asks it; methods "fused" and "refined" (REFINE_METHOD on the twin with
        its turn grid) cost up to seconds."""
        from ..imageio import gan_to_uint8

        if s.latent is None:
            raise UserError("choose a photo first")
        args = (s.latent, light_of(s, str(p.get("light", "source"))), float(p.get("yaw", 0)),
                float(p.get("pitch", 0)), float(p.get("rotate", 0)))
        if method == "mapper":
            ed = editor()
            with lock, ed.using("mapper"):
                img = ed.relight(*args)
        else:  # the twin for both: they share its photo's reconstruction and re-render changes (a second
            tw = refiner()  # editor would reconstruct the photo again and evict the twin's from the latent)
            with refine_lock, tw.using("fused" if method == "fused" else REFINE_METHOD):
                tw.turn_grid, tw.light_grid = (REFINE_GRID, REFINE_LIGHT_GRID) if method == "refined" else (None, None)
                img = tw.relight(*args)
        return apply_exposure(gan_to_uint8(img)[0], float(p.get("exposure", 0)))

    @app.get("/api/session/{sid}/download/photo")
    def download_photo(sid: str, method: str = "mapper"):
        """method: "mapper" (the page's fast frames), "refined" (its refined frames) or "fused" (the same,
        every turn's re-render its own: a few seconds; docs/editing.md)."""
        s = session(sid)
        if method not in DOWNLOAD_METHODS:
            raise UserError(f"unknown download method {method!r}; use {', '.join(DOWNLOAD_METHODS)}")
        crop = render(s, s.params, method)
        out = crop if s.latent.alignment is None else editor().paste(s.photo, s.latent, crop)
        buf = io.BytesIO()
        from PIL import Image

        Image.fromarray(out).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"Content-Disposition": 'attachment; filename="edited.png"'})

    @app.get("/api/session/{sid}/download/latent")
    def download_latent(sid: str):
        s = session(sid)
        if s.latent is None:
            raise UserError("choose a photo first")
        from ..invert.latent_file import save_latent

        path = save_latent(s.latent, s.folder / "latent.pt", force=True)
        return FileResponse(path, filename="latent.pt", media_type="application/octet-stream")

    @app.websocket("/ws/{sid}")
    async def live(ws: WebSocket, sid: str):
        await ws.accept()
        if sid not in sessions:
            await ws.send_json({"error": "this page's session has ended; reload the page"})
            await ws.close()
            return
        s = sessions[sid]
        s.connected = True
        latest: dict = {}
        wake = asyncio.Event()
        # the refinement running, the request waiting for one, the newest request answered
        refining = want = shown = None
        # requests at the grids' other rotations and views to refine while the sliders rest (slider_ring),
        # the request whose ring they are, and how many of them are made
        ahead, ring_of, made = [], None, 0

        def prefetch(msg: dict) -> tuple[None, None]:
            try:
                render(s, msg, "refined")  # kept in the twin's re-render changes; the image is not sent
            except (ValueError, TypeError):
                pass
            return None, None

        async def receive():
            while True:
                latest["msg"] = await ws.receive_json()  # newer requests overwrite older ones
                wake.set()

        def refine(msg: dict) -> tuple[dict, dict]:
            t0 = time.perf_counter()
            try:
                img = render(s, msg, "refined")
            except (ValueError, TypeError) as e:
                return msg, {"error": str(e).splitlines()[0], "ms": (time.perf_counter() - t0) * 1e3}
            out = {"image": png_data_url(img, 4), "ms": (time.perf_counter() - t0) * 1e3}
            tw = refiner()
            with refine_lock:
                problem = tw.rerender_problem(s.latent)
            if problem:  # the fused edit fell back to the mapper's: the page must not call it refined
                out["note"] = f"not refined: {problem.split(':')[0]}; this is the mapper's edit"
            return msg, out

        recv = asyncio.create_task(receive())
        try:
            while True:
                wait = asyncio.create_task(wake.wait())
                pending = {wait, recv} | ({refining} if refining else set())
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if recv in done:
                    wait.cancel()
                    recv.result()  # raises the disconnect
                if refining is not None and refining in done:
                    msg, out = refining.result()
                    refining = None
                    if msg is None:  # a rotation refined ahead
                        made += 1
                        if "msg" not in latest and ring_of is not None and ring_of is shown:
                            await ws.send_json({"seq": shown.get("seq"), "ahead": made, "of": made + len(ahead)})
                    elif "msg" not in latest and msg is shown:  # still the page's newest request
                        await ws.send_json({"seq": msg.get("seq"), "refined": True, **out})
                        if "error" not in out and "note" not in out:
                            ahead, ring_of, made = slider_ring(msg, s.spans), msg, 0
                if wake.is_set():
                    wake.clear()
                    msg = latest.pop("msg", None)
                    if msg is not None:
                        ahead, ring_of = [], None  # the next move: what was ahead of the last one may not be
                        t0 = time.perf_counter()
                        try:
                            img = await asyncio.to_thread(render, s, msg)
                            s.params = dict(msg)
                            shown = msg
                            await ws.send_json({"seq": msg.get("seq"), "image": png_data_url(img, 4),
                                                "ms": (time.perf_counter() - t0) * 1e3})
                            want = msg if msg.get("refine") else None
                        except (ValueError, TypeError) as e:
                            await ws.send_json({"seq": msg.get("seq"), "error": str(e).splitlines()[0]})
                            want = shown = None
                if not wait.done():
                    wait.cancel()
                # the sliders rest (no newer request waiting) and nothing refines: refine the newest request,
                # then the grids' other rotations and views along the sliders
                if refining is None and "msg" not in latest:
                    if want is not None:
                        refining, want = asyncio.create_task(asyncio.to_thread(refine, want)), None
                    elif ahead:
                        refining = asyncio.create_task(asyncio.to_thread(prefetch, ahead.pop(0)))
        except WebSocketDisconnect:
            pass
        finally:
            recv.cancel()
            end(sid)  # a refinement still running finishes in its thread; its answer goes nowhere

    app.state.sessions = sessions
    return app
