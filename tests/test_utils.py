"""resnet_tf.utils: atomic writes, argument checks."""

import json
import os

import pytest

from resnet_tf.utils import check_positive_int, write_json, write_text


def test_a_failed_json_write_leaves_the_earlier_file(tmp_path):
    path = tmp_path / "report.json"
    write_json({"run": 1}, path)
    with pytest.raises(TypeError):
        write_json({"run": 2, "bad": object()}, path)
    assert json.loads(path.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left


def test_write_text_replaces_whole(tmp_path):
    path = tmp_path / "sub" / "names.txt"
    write_text(path, "a\nb\n")
    write_text(path, "c\n")
    assert path.read_text() == "c\n" and os.listdir(tmp_path / "sub") == ["names.txt"]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None])
def test_check_positive_int_names_the_argument(value):
    with pytest.raises(ValueError, match=f"depth must be a positive integer. Received: "
                                         f"depth={value!r}"):
        check_positive_int("depth", value)
    check_positive_int("depth", 3)


def test_atomic_files_get_the_permissions_open_gives(tmp_path):
    import os

    write_text(tmp_path / "plain.txt", "x")
    with open(tmp_path / "opened.txt", "w") as f:
        f.write("x")
    assert os.stat(tmp_path / "plain.txt").st_mode == os.stat(tmp_path / "opened.txt").st_mode
