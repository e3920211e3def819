"""The app's uploads (the cluster explorer's data picker, streamlit's AppTest on the tiny model): a message in the
page naming the user's file, never a traceback."""

from __future__ import annotations

import re

import numpy as np

from core.data import MAX_UPLOAD_BYTES
from tests.reliability.cases import Case, cases

TEXT_ROWS = "".join(f"the {i} red dog runs in the garden,l{i % 3}\n" for i in range(250))


def upload(given: str, sees: str, name: str, data: bytes, pattern: str, error: bool = True) -> Case:
    kept = "nothing stored under the user's name; the page stays usable" if error else "the upload, to embed"
    return Case(f"upload-{name}", given, sees, kept, "input", {"name": name, "data": data, "pattern": pattern})


@cases(
    upload(
        "an uploaded .csv that cannot be parsed (a quote never closed)",
        "`Cannot use this data: cannot parse bad.csv: ...` in the page",
        "bad.csv",
        b'text,label\n"a cat sleeps,l1\nthe dog, barks, loudly\n',
        r"Cannot use this data: cannot parse bad\.csv: ",
    ),
    upload(
        "an empty uploaded .csv (0 bytes)",
        "`Cannot use this data: empty.csv is empty` in the page",
        "empty.csv",
        b"",
        r"Cannot use this data: empty\.csv is empty",
    ),
    upload(
        "an uploaded .csv of binary bytes",
        "`Cannot use this data: binary.csv is not UTF-8 (byte 0x.. at offset N); re-save it as UTF-8` in the page",
        "binary.csv",
        bytes(np.random.default_rng(5).integers(128, 256, 4096, dtype=np.uint8)),
        r"Cannot use this data: binary\.csv is not UTF-8 \(byte 0x[0-9a-f]{2} at offset \d+\); re-save it as UTF-8",
    ),
    upload(
        "an uploaded Latin-1 (non-UTF-8) .csv",
        "`Cannot use this data: latin1.csv is not UTF-8 (byte 0xe9 at offset N); re-save it as UTF-8` in the page",
        "latin1.csv",
        "text\ncafé crème\n".encode("latin-1"),
        r"Cannot use this data: latin1\.csv is not UTF-8 \(byte 0xe9 at offset 8\)",
    ),
    upload(
        f"an uploaded .csv over the {MAX_UPLOAD_BYTES // 2**20} MB limit",
        "`Cannot use this data: huge.csv is 21.0 MB; the limit is 20 MB` in the page",
        "huge.csv",
        b"text\n" + b"a cat sleeps on the red mat\n" * (21 * 2**20 // 28),
        r"Cannot use this data: huge\.csv is 2\d\.\d MB; the limit is 20 MB",
    ),
    upload(
        "an uploaded .csv without a `text` column (columns `sentence`, `topic`)",
        "`sentences.csv has no column named text: showing sentence. Pick the text column above.`, its columns to pick",
        "sentences.csv",
        ("sentence,topic\n" + TEXT_ROWS).encode(),
        r"sentences\.csv has no column named `text`: showing `sentence`\. Pick the text column above\.",
        error=False,
    ),
)
def test_a_bad_upload_is_a_message_in_the_page(tiny_model_dir, case):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR
    from workbench.state import CUSTOM_MODEL, NO_ADAPTER

    app = AppTest.from_file(str(PAGES_DIR / "cluster_explorer.py"), default_timeout=120)
    app.session_state["model_pick"] = CUSTOM_MODEL
    app.session_state["model_custom"] = str(tiny_model_dir)
    app.session_state["adapter_pick"] = NO_ADAPTER
    app.session_state["explore_source"] = "upload a file"
    app.run()
    assert not app.exception, app.exception
    app.file_uploader[0].set_value((case.data["name"], case.data["data"], "text/csv")).run()
    assert not app.exception, app.exception
    shown = [e.value for e in app.error] + [i.value for i in app.info]
    assert any(re.search(case.data["pattern"], text) for text in shown), shown
    assert all("uploads/" not in text for text in shown)  # the user's file name, never the stored copy's
