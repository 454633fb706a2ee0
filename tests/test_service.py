"""hysafe serve: every endpoint and bad input through the framework's test client, a real browser
on a real server, path traversal attempts."""

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from hysafe.collection import ImageFolder, TextFile, build_index, labels_from_manifest  # noqa: E402
from hysafe.data import WorldConfig, generate_world  # noqa: E402
from hysafe.models.backbone import TINY_MODEL, LoraConfig  # noqa: E402
from hysafe.models.checkpoint import save_model  # noqa: E402
from hysafe.models.safety_model import create_model  # noqa: E402
from hysafe.serve.app import Served, Service, create_app  # noqa: E402
from hysafe.training import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_base, randomize_lora):
    root = tmp_path_factory.mktemp("serve")
    world = generate_world(
        root / "world", WorldConfig(n_train=48, n_val=16, n_test=16, seed=4), progress=False
    )
    torch.manual_seed(0)
    hysac = train(
        create_model("hysac", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0)),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False),
    ).model
    ckpt = save_model(hysac, root / "hysac.safetensors", bounds=hysac.bounds)
    clip = create_model("clip", TINY_MODEL, tiny_base)
    images = ImageFolder(root / "world" / "images" / "test")
    indexes = {
        "CLIP": build_index(
            clip,
            images,
            root / "idx-clip",
            progress=False,
            model_spec={"clip": {"model": TINY_MODEL, "pretrained": tiny_base}},
        ),
        "HySAC": build_index(
            hysac, images, root / "idx-hysac", progress=False, model_spec={"checkpoint": str(ckpt)}
        ),
    }
    torch.manual_seed(1)
    # LoRA on attention
    safe = create_model("safeclip", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0))
    randomize_lora(safe)
    indexes["Safe-CLIP"] = build_index(safe, images, root / "idx-safe", progress=False)
    service = Service(
        {
            "CLIP": Served(clip, indexes["CLIP"]),
            "HySAC": Served(hysac, indexes["HySAC"]),
            "Safe-CLIP": Served(safe, indexes["Safe-CLIP"]),
        },
        labels=labels_from_manifest(world),
        max_upload_mb=0.05,
    )
    client = TestClient(create_app(service), raise_server_exceptions=False)
    client.hysafe_service = service  # the tests that look behind the HTTP surface
    return root, client


def png_bytes(size=32):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def test_endpoints(served):
    _, client = served
    assert client.get("/health").json() == {"status": "ok", "models": 3}
    models = {m["name"]: m for m in client.get("/models").json()}
    assert (
        models["HySAC"]["geometry"]["name"] == "lorentz"
        and models["HySAC"]["index"]["size"] == 32
        and models["CLIP"]["bounds"] is None
    )
    r = client.post("/search", json={"text": "a red circle, covered in blood", "k": 5})
    assert r.status_code == 200
    results = r.json()["results"]
    assert set(results) == {"CLIP", "Safe-CLIP", "HySAC", "HySAC + traversal"} and all(
        len(h) == 5 for h in results.values()
    )
    hit = results["HySAC"][0]
    assert hit["label"] in ("safe", "unsafe") and hit["thumb"].startswith("/thumb/HySAC/")
    thumb = client.get(hit["thumb"])
    assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
    r = client.post(
        "/search",
        files={"image": ("q.png", png_bytes(), "image/png")},
        data={"k": "3", "models": "HySAC", "traversal": "off"},
    )
    assert (
        r.status_code == 200
        and set(r.json()["results"]) == {"HySAC"}
        and len(r.json()["results"]["HySAC"]) == 3
    )
    r = client.post("/classify", json={"texts": ["a red circle", "a red circle, covered in blood"]})
    rows = r.json()["results"]["HySAC"]
    assert (
        r.status_code == 200
        and len(rows) == 2
        and all(row["unsafe"] == (row["score"] >= row["threshold"]) for row in rows)
    )
    assert r.json()["results"]["CLIP"][0]["unsafe"] is None  # no threshold without bounds: no decision
    r = client.post("/classify", files=[("images", ("a.png", png_bytes(), "image/png"))])
    assert r.status_code == 200 and r.json()["results"]["HySAC"][0]["modality"] == "image"
    assert (
        client.get("/docs").status_code == 200
        and "hysafe" in client.get("/openapi.json").json()["info"]["title"]
    )
    assert 'id="cols"' in client.get("/").text


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "call, status, field",
    [
        (lambda c: c.post("/search", json={"k": 3}), 422, "text"),
        (lambda c: c.post("/search", json={"text": "x", "k": 0}), 422, "k"),
        (lambda c: c.post("/search", json={"text": "x", "k": 10**6}), 422, "k"),
        (lambda c: c.post("/search", json={"text": "x", "k": "many"}), 422, "k"),
        (lambda c: c.post("/search", json={"text": "   "}), 422, "text"),
        (lambda c: c.post("/search", json={"text": "x", "models": ["Nope"]}), 404, "models"),
        (lambda c: c.post("/search", json={"text": "x", "models": ["../../etc/passwd"]}), 404, "models"),
        (lambda c: c.post("/search", json={"text": "x", "tau": -1}), 422, "tau"),
        (
            lambda c: c.post(
                "/search", content=b'{"text": "x", "tau": NaN}', headers={"content-type": "application/json"}
            ),
            422,
            "tau",
        ),
        (lambda c: c.post("/search", json={"text": "x", "tau": "nan"}), 422, "tau"),
        (lambda c: c.post("/search", json={"text": "x", "tau": "magic"}), 422, "tau"),
        (
            lambda c: c.post("/search", content=b"not json", headers={"content-type": "application/json"}),
            422,
            "body",
        ),
        (
            lambda c: c.post("/search", files={"image": ("b.png", b"\x89PNG broken", "image/png")}),
            422,
            "image",
        ),
        (
            lambda c: c.post("/search", files={"image": ("big.png", png_bytes(256), "image/png")}),
            413,
            "body",
        ),
        (
            lambda c: c.post(
                "/search", files={"image": ("x.png", png_bytes(), "image/png")}, data={"k": "2x"}
            ),
            422,
            "k",
        ),
        (lambda c: c.post("/classify", json={}), 422, "texts"),
        (lambda c: c.post("/search", json={"text": "x", "traversal": "maybe"}), 422, "traversal"),
        (lambda c: c.post("/search", json={"text": "x", "traversal": None}), 422, "traversal"),
        (lambda c: c.post("/search", content=rb'{"text": "\udcff abc"}', headers=JSON), 422, "text"),
        (lambda c: c.post("/search", json={"text": "a" * 5000}), 422, "text"),
        (lambda c: c.post("/classify", content=rb'{"texts": ["ok", "\ud800"]}', headers=JSON), 422, "texts"),
        (lambda c: c.post("/classify", json={"texts": "x" * 5000}), 422, "texts"),
        (lambda c: c.post("/search", json={"text": "x", "tau": True}), 422, "tau"),
        (lambda c: c.post("/classify", json={"texts": ["ok", ""]}), 422, "texts"),
        (lambda c: c.get("/thumb/HySAC/100000"), 404, "row"),
        (lambda c: c.get("/thumb/HySAC/-1"), 404, "row"),
        (lambda c: c.get("/thumb/..%2F..%2Fetc/1"), 404, "path"),
        (lambda c: c.get("/thumb/..%2F..%2Fetc"), 404, "path"),
        (lambda c: c.get("/thumb/Nope/1"), 404, "model"),
        # nested past the parser's recursion limit, and deep under it: no 500 (RecursionError) either way
        (
            lambda c: c.post(
                "/classify", content=b'{"texts":' + b"[" * 1000 + b"]" * 1000 + b"}", headers=JSON
            ),
            422,
            "body",
        ),
        (
            lambda c: c.post(
                "/search", content=b'{"text":"x","tau":' + b'{"a":' * 30 + b"1" + b"}" * 31, headers=JSON
            ),
            422,
            "body",
        ),
        # a page on any site may POST text/plain to a local service without asking: refused
        (
            lambda c: c.post("/classify", content=b'{"texts":["a"]}', headers={"content-type": "text/plain"}),
            415,
            "body",
        ),
        (lambda c: c.post("/search", content=b'{"text":"x"}'), 415, "body"),
        (lambda c: c.post("/classify", json={"texts": ["a"] * 257}), 413, "texts"),
    ],
)
def test_bad_requests_get_a_4xx_json_error_naming_the_field(served, call, status, field):
    """One status per kind of bad input: 422 a missing or invalid field, 413 too large, 415 neither JSON
    nor a form, 404 unknown."""
    _, client = served
    r = call(client)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"] and "Traceback" not in r.text


def test_path_traversal_never_reaches_the_filesystem(served):
    _, client = served
    for url in (
        "/thumb/HySAC/../../../../etc/passwd",
        "/thumb/HySAC/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/../../etc/passwd",
        "/thumb/HySAC/1/../../x",
    ):
        r = client.get(url)
        assert r.status_code in (404, 422) and b"root:" not in r.content and "field" in r.json(), url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_page_in_a_real_browser_on_a_real_server(served, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root, _ = served
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hysafe.cli",
            "serve",
            "--index",
            f"CLIP={root / 'idx-clip'}",
            "--index",
            f"HySAC={root / 'idx-hysac'}",
            "--labels",
            str(root / "world" / "manifest.jsonl"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(120):
            try:
                if (
                    json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1))["status"]
                    == "ok"
                ):
                    break
            except OSError:
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/?q=a%20red%20circle%2C%20covered%20in%20blood&k=4"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
        dom = subprocess.run(
            [chromium, *flags, "--window-size=1400,900", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        # every served model side by side inside a 1,400 px window, with its list and the examples
        assert int(dom.split('data-width="', 1)[1].split('"', 1)[0]) <= 1400
        assert dom.count("<li>") == 2 and "traversal available" in dom
        done = json.loads(dom.split('data-done="', 1)[1].split('"', 1)[0].replace("&quot;", '"'))
        # every column shows k decoded thumbnails
        assert done == {
            "CLIP": 4,
            "HySAC": 4,
            "HySAC + traversal": 4,
        }
        shot = tmp_path / "serve.png"
        subprocess.run(
            [chromium, *flags, "--window-size=1300,800", f"--screenshot={shot}", url],
            capture_output=True,
            timeout=120,
        )
        assert shot.stat().st_size > 20_000
    finally:
        server.terminate()
        server.wait(timeout=30)


HOSTILE_PROMPTS = [
    "<img src=x onerror=\"document.body.dataset.pwned='img'\"> a red circle, covered in blood",
    "<details open ontoggle=\"document.body.dataset.pwned='details'\">a blue square</details>",
    "<script>document.body.dataset.pwned='script'</script> a green triangle",
    "<svg onload=\"document.body.dataset.pwned='svg'\"></svg> a red circle",
    '" onmouseover="document.body.dataset.pwned=1" x="',
]


def _serve(args: list[str], port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "hysafe.cli", "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1))
            if health["status"] == "ok":
                return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise AssertionError("the service did not start")


def test_the_page_shows_script_bearing_prompts_as_text_in_a_real_browser(served, tmp_path):
    """A moderation service's input is hostile text: an index of prompts carrying markup and
    event handlers is shown as text by the page (the DOM holds them escaped; no handler runs)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root, _ = served
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(HOSTILE_PROMPTS) + "\n")
    model = create_model("clip", TINY_MODEL, _tiny_base_of(root))
    spec = {"clip": {"model": TINY_MODEL, "pretrained": _tiny_base_of(root)}}
    build_index(model, TextFile(prompts), tmp_path / "idx-text", progress=False, model_spec=spec)
    port = _free_port()
    server = _serve(["--index", f"<b>Texts</b>={tmp_path / 'idx-text'}"], port)
    try:
        url = f"http://127.0.0.1:{port}/?q=a%20red%20circle&k=5"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
        run = subprocess.run(
            [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
        dom = run.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert 'data-done="' in dom, dom[-2000:]
    assert "pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]  # no handler set it on <body>
    cols = dom.split('id="cols"', 1)[1]
    assert '<img src="x"' not in cols and "<details" not in cols and "<svg" not in cols
    assert "<script>" not in cols
    assert cols.count("&lt;img src=x onerror=") == 1 and cols.count("&lt;details open ontoggle=") == 1
    assert "&lt;b&gt;Texts&lt;/b&gt;" in cols  # a model name is text too


def _tiny_base_of(root) -> str:
    return json.loads((root / "idx-clip" / "index.json").read_text())["model_spec"]["clip"]["pretrained"]


def test_hits_carry_ids_relative_to_the_index_and_the_models_decision(served):
    _, client = served
    r = client.post("/search", json={"text": "a red circle, covered in blood", "k": 3})
    assert r.status_code == 200
    for name, hits in r.json()["results"].items():
        for h in hits:
            assert not h["id"].startswith("/") and h["id"].endswith(".png"), (name, h["id"])
            if name.startswith("HySAC"):
                assert isinstance(h["unsafe"], bool)
            else:
                assert h["unsafe"] is None
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["HySAC"]["traversal"] and isinstance(models["HySAC"]["threshold"], float)
    assert not models["CLIP"]["traversal"] and models["CLIP"]["threshold"] is None
    rows = client.post("/classify", json={"texts": ["a red circle"]}).json()["results"]
    assert rows["CLIP"][0]["unsafe"] is None and "no decision threshold" in rows["CLIP"][0]["note"]
    assert "note" not in rows["HySAC"][0]


def test_public_ids_never_name_a_server_folder():
    """An index of listed absolute paths (what ``serve --demo`` builds) answers with ids relative to
    the folder they share."""
    from types import SimpleNamespace

    import pyarrow as pa

    from hysafe.serve.app import id_root, public_id

    ids = ["/srv/data/world/images/test/a.png", "/srv/data/world/images/val/b.png"]
    index = SimpleNamespace(meta={"modality": "image"}, items=pa.table({"id": ids}))
    root = id_root(index)
    assert root == "/srv/data/world/images"
    assert [public_id(i, root) for i in ids] == ["test/a.png", "val/b.png"]
    one = SimpleNamespace(meta={"modality": "image"}, items=pa.table({"id": ids[:1]}))
    assert public_id(ids[0], id_root(one)) == "a.png"
    texts = SimpleNamespace(meta={"modality": "text"}, items=pa.table({"id": ["line 1"]}))
    assert id_root(texts) is None

    assert public_id("/srv/data/world/images/test/00001_safe.png", "/srv/data/world") == (
        "images/test/00001_safe.png"
    )
    assert public_id("sub/a.png", "/srv") == "sub/a.png"  # already relative
    assert public_id("line 3", None) == "line 3"


def test_concurrent_requests_are_safe_and_equal_sequential_ones(served):
    """peft re-merges attention LoRA inside every forward, so concurrent forwards of one adapter
    model corrupt each other. The service runs merged-weights copies without a lock and batches
    requests that arrive together; results equal the sequential ones."""
    import threading

    _, client = served
    search, classify = (
        {"text": "a red circle, covered in blood", "k": 3},
        {"texts": ["a red circle", "a blue square"]},
    )
    expected = {
        "s": client.post("/search", json=search).json(),
        "c": client.post("/classify", json=classify).json(),
    }
    errors, results = [], []

    def worker(i):
        try:
            for j in range(6):
                kind = "s" if (i + j) % 2 else "c"
                r = client.post(
                    "/search" if kind == "s" else "/classify", json=search if kind == "s" else classify
                )
                results.append((kind, r.status_code, r.json()))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 48 and all(status == 200 for _, status, _ in results)
    for kind, _, body in results:
        for name, rows in expected[kind]["results"].items():
            key = "id" if kind == "s" else "score"
            assert [r[key] if key == "id" else round(r[key], 5) for r in body["results"][name]] == [
                r[key] if key == "id" else round(r[key], 5) for r in rows
            ], (kind, name)


def test_docs_work_offline_and_the_schema_describes_every_body_field(served):
    """/docs loads Swagger UI from the installed package (no CDN), and the OpenAPI schema documents
    the fields of /search and /classify (JSON and multipart)."""
    _, client = served
    docs = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in docs and "unpkg.com" not in docs
    assets = [part.split('"', 1)[0] for part in docs.split('src="')[1:] + docs.split('href="')[1:]]
    local = [a for a in assets if a.startswith("/") and not a.startswith("/openapi")]
    assert any(a.endswith("swagger-ui-bundle.js") for a in local)
    for asset in local:
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/openapi.json").json()["paths"]
    search = schema["/search"]["post"]["requestBody"]["content"]
    assert set(search["application/json"]["schema"]["properties"]) == {
        "text",
        "k",
        "models",
        "traversal",
        "tau",
    }
    assert search["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    classify = schema["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(classify["properties"]) == {"texts", "models"}
    from hysafe.serve.requests import CLASSIFY_FIELDS, SEARCH_FIELDS  # what the routes accept

    assert set(SEARCH_FIELDS) == set(search["application/json"]["schema"]["properties"])
    assert set(CLASSIFY_FIELDS) == set(classify["properties"])
    form_fields = set(search["multipart/form-data"]["schema"]["properties"])
    assert form_fields == set(SEARCH_FIELDS) - {"text"} | {"image"}


def test_traversal_takes_true_false_and_the_forms_spellings(served):
    _, client = served
    for value, on in (
        (False, False),
        ("no", False),
        ("off", False),
        ("0", False),
        (True, True),
        ("yes", True),
    ):
        r = client.post("/search", json={"text": "a red circle", "k": 2, "traversal": value})
        assert r.status_code == 200 and ("HySAC + traversal" in r.json()["results"]) == on, value


def test_a_chunked_oversized_body_and_a_maximal_text_do_not_stall_the_service(served):
    """The size limit counts the bytes that arrive (a chunked body has no Content-Length), and a
    text over the limit is refused before tokenising: a normal search right after each answers
    within a second."""
    import http.client

    root, _ = served
    port = _free_port()
    server = _serve(["--index", f"HySAC={root / 'idx-hysac'}"], port)  # the default 10 MB limit

    def normal_search_seconds() -> float:
        t = time.perf_counter()
        body = json.dumps({"text": "a red circle", "k": 2}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/search", data=body, headers=JSON)
        assert json.load(urllib.request.urlopen(req, timeout=10))["results"]
        return time.perf_counter() - t

    try:
        normal_search_seconds()  # warm
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/search")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        status = None
        try:
            for _ in range(320):  # 20 MB
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:  # the server answered and closed while the body was still coming
            pass
        try:
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            status = None
        conn.close()
        assert status in (413, None)
        assert normal_search_seconds() < 1.0
        big = json.dumps({"text": "a red circle " * 700_000}).encode()  # 9 MB of text, under 10 MB
        req = urllib.request.Request(f"http://127.0.0.1:{port}/search", data=big, headers=JSON)
        t = time.perf_counter()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 422 and json.load(refused.value)["field"] == "text"
        assert time.perf_counter() - t < 5  # refused before tokenising (which took 77 s)
        assert normal_search_seconds() < 1.0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_maximal_text_is_refused_before_tokenising(served):
    _, client = served
    t = time.perf_counter()
    r = client.post("/search", json={"text": "a red circle " * 3_500})  # 45 KB, under the upload limit
    assert r.status_code == 422 and r.json()["field"] == "text" and time.perf_counter() - t < 2
    assert client.post("/search", json={"text": "a red circle", "k": 2}).status_code == 200


def test_served_weights_stay_bit_identical_over_1000_concurrent_forwards(served):
    """The served models' forwards write no weight: after 1,000 forwards from 16 threads every
    tensor of every served model is bit-identical, and concurrent requests shared batches."""
    import threading

    service = served[1].hysafe_service
    before = {n: {k: v.clone() for k, v in s.model.state_dict().items()} for n, s in service.served.items()}
    assert all(not getattr(s.model.backbone, "has_adapters", False) for s in service.served.values())
    counted = {key: (b.forwards, b.rows) for key, b in service.encoders.items()}
    errors = []

    def worker(i):
        try:
            for j in range(21):  # 16 x 21 searches x 3 models = 1,008 forwards
                service.search(text=f"a red circle {i} {j}", k=2)
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    forwards = sum(b.forwards - counted[key][0] for key, b in service.encoders.items())
    rows = sum(b.rows - counted[key][1] for key, b in service.encoders.items())
    assert rows == 16 * 21 * 3 and forwards < rows  # some forward served more than one request
    for name, s in service.served.items():
        after = s.model.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in before[name]), name


def test_batchers_sharing_a_lock_run_one_forward_at_a_time():
    """The service's batchers share one lock: forwards of different models never overlap (on a
    CPU they would fight over the same cores), and every caller still gets its own rows."""
    import threading

    from hysafe.serve.batching import Batcher

    state = {"active": 0, "most": 0}
    guard = threading.Lock()

    def encode(scale):
        def run(x):
            with guard:
                state["active"] += 1
                state["most"] = max(state["most"], state["active"])
            time.sleep(0.005)  # long enough for an unlocked forward of the other batcher to overlap
            with guard:
                state["active"] -= 1
            return x * scale

        return run

    lock = threading.Lock()
    batchers = [Batcher(encode(2.0), lock=lock), Batcher(encode(3.0), lock=lock)]
    got, threads = {}, []
    for i in range(12):
        b = batchers[i % 2]
        threads.append(threading.Thread(target=lambda i=i, b=b: got.update({i: b(torch.full((1, 2), i))})))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["most"] == 1
    assert all(torch.equal(got[i], torch.full((1, 2), i * (2.0 if i % 2 == 0 else 3.0))) for i in range(12))


def test_the_inference_copy_equals_the_adapter_model(tiny_base, randomize_lora):
    from hysafe.models.checkpoint import inference_copy

    torch.manual_seed(5)
    model = create_model("safeclip", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0))
    randomize_lora(model)
    model.eval()
    copy = inference_copy(model)
    assert copy is not model and not copy.backbone.has_adapters and model.backbone.has_adapters
    tokens = model.tokenize(["a red circle", "a blue square, covered in blood"])
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(copy.encode_text(tokens), model.encode_text(tokens), atol=1e-5)
        assert torch.allclose(copy.encode_image(pixels), model.encode_image(pixels), atol=1e-5)
    assert inference_copy(copy) is copy


def test_a_thumbnail_whose_file_is_gone_is_a_404_naming_the_row(served, tmp_path):
    """H82: an indexed image deleted from disk gave 500."""
    from hysafe.serve.requests import RequestError

    root, _ = served
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, src in enumerate(sorted((root / "world" / "images" / "test").iterdir())[:2]):
        shutil.copy(src, folder / f"{i}.png")
    clip = create_model("clip", TINY_MODEL, _tiny_base_of(root))
    index = build_index(clip, ImageFolder(folder), tmp_path / "idx", progress=False)
    service = Service({"C": Served(clip, index)})
    assert service.thumb_path("C", 1).is_file()
    (folder / "1.png").unlink()
    with pytest.raises(RequestError, match="row 1 of C's index: its image file is gone") as gone:
        service.thumb_path("C", 1)
    assert gone.value.status == 404 and gone.value.field == "row"


def test_classify_takes_at_most_max_items_images_and_refuses_more_before_decoding(served, monkeypatch):
    _, client = served
    service = client.hysafe_service
    monkeypatch.setattr(service, "max_items", 3)
    files = [("images", (f"{i}.png", png_bytes(8), "image/png")) for i in range(3)]
    assert client.post("/classify", files=files).status_code == 200
    decoded = []
    monkeypatch.setattr("hysafe.serve.app.read_image", lambda *a: decoded.append(a) or None)
    r = client.post("/classify", files=files + [("images", ("bad.png", b"not an image", "image/png"))])
    assert r.status_code == 413 and r.json()["field"] == "images" and "at most 3" in r.json()["error"]
    assert decoded == []


def test_a_classify_form_names_its_models_comma_separated(served):
    _, client = served
    files = [("images", ("x.png", png_bytes(8), "image/png"))]
    r = client.post("/classify", files=files, data={"models": "HySAC, CLIP"})
    assert r.status_code == 200 and set(r.json()["results"]) == {"HySAC", "CLIP"}
    r = client.post("/classify", content=b'{"texts":["a"]}')
    assert r.status_code == 415 and "with a Content-Type header" in r.json()["error"]
