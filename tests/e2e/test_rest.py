"""The documented REST API, end to end: curl-shaped requests -> Envoy -> gRPC -> dlib -> SQLite."""

from __future__ import annotations

import math

import pytest

from tests.helpers import EDGE, Rest, ServiceProcess, expected_distance, photo

TOLERANCE = 0.03  # Pillow vs dlib JPEG decoding, see shared/faces/README.md


def enrol(rest: Rest, name: str) -> dict:
    reply = rest.upload("/v1/faces", {"face": photo(name)})
    assert reply.status == 200, reply.body
    return reply.json


def test_create_face_returns_id_descriptor_box_and_times(rest: Rest) -> None:
    face = enrol(rest, "person01_04.jpg")
    assert isinstance(face["id"], str) and face["id"]
    assert isinstance(face["descriptor"], list) and len(face["descriptor"]) == 128
    assert all(isinstance(v, float | int) for v in face["descriptor"])
    box = face["bounding_box"]
    assert 0 <= box["left"] < box["right"] <= 330 and 0 <= box["top"] < box["bottom"] <= 512
    assert box["right"] - box["left"] > 100
    assert face["image_size"] == {"width": 330, "height": 512}
    assert face["create_time"].endswith("Z") and face["update_time"].endswith("Z")
    assert len(face["landmarks"]) == 68


def test_list_get_update_delete_round_trip(rest: Rest) -> None:
    created = enrol(rest, "person05_01.jpg")
    listed = rest.get("/v1/faces")
    assert listed.status == 200
    assert isinstance(listed.json, list)
    assert created["id"] in [face["id"] for face in listed.json]

    got = rest.get(f"/v1/faces/{created['id']}")
    assert got.status == 200 and got.json["descriptor"] == created["descriptor"]

    updated = rest.upload(f"/v1/faces/{created['id']}", {"face": photo("person05_02.jpg")}, method="PUT")
    assert updated.status == 200, updated.body
    assert updated.json["id"] == created["id"]
    assert updated.json["descriptor"] != created["descriptor"]
    assert updated.json["update_time"] > created["update_time"]
    assert updated.json["create_time"] == created["create_time"]
    assert rest.get(f"/v1/faces/{created['id']}").json["descriptor"] == updated.json["descriptor"]

    deleted = rest.delete(f"/v1/faces/{created['id']}")
    assert deleted.status == 200 and deleted.json == {"id": created["id"], "deleted": True}
    assert rest.get(f"/v1/faces/{created['id']}").status == 404
    again = rest.delete(f"/v1/faces/{created['id']}")
    assert again.status == 404 and again.reason == "FACE_NOT_FOUND"


def test_list_is_empty_array_for_new_owner(service: ServiceProcess, database_url: str) -> None:
    from tests.helpers import create_key

    fresh = Rest(service.http_base, create_key(database_url, "nobody-yet"))
    reply = fresh.get("/v1/faces")
    assert reply.status == 200 and reply.body.strip() == b"[]"


def test_list_pagination_with_header_token(service: ServiceProcess, database_url: str) -> None:
    from tests.helpers import create_key

    owner = Rest(service.http_base, create_key(database_url, "pager"))
    ids = [enrol(owner, name)["id"] for name in ("person01_04.jpg", "person03_05.jpg", "person05_01.jpg")]
    first = owner.get("/v1/faces?page_size=2")
    assert first.status == 200 and [f["id"] for f in first.json] == ids[:2]
    token = first.headers.get("x-next-page-token")
    assert token
    second = owner.get(f"/v1/faces?page_size=2&page_token={token}")
    assert [f["id"] for f in second.json] == ids[2:]
    assert "x-next-page-token" not in second.headers
    bad = owner.get("/v1/faces?page_token=not-a-token")
    assert bad.status == 400 and bad.reason == "PAGE_TOKEN_INVALID"
    too_big = owner.get("/v1/faces?page_size=5000")
    assert too_big.status == 400 and too_big.reason == "PAGE_SIZE_INVALID"


def test_compare_same_person_matches(rest: Rest) -> None:
    a, b = enrol(rest, "person05_01.jpg"), enrol(rest, "person05_02.jpg")
    reply = rest.post_json("/v1/faces/compare", {"face_1": a["id"], "face_2": b["id"]})
    assert reply.status == 200, reply.body
    assert reply.json["match"] is True
    assert reply.json["threshold"] == pytest.approx(0.6)
    assert reply.json["distance"] == pytest.approx(expected_distance("person05_01.jpg", "person05_02.jpg"), abs=TOLERANCE)
    # The true Euclidean distance of the returned descriptors, not its square.
    own = math.dist(a["descriptor"], b["descriptor"])
    assert reply.json["distance"] == pytest.approx(own, abs=1e-5)


def test_compare_different_people_do_not_match(rest: Rest) -> None:
    a, b = enrol(rest, "person01_04.jpg"), enrol(rest, "person05_01.jpg")
    reply = rest.post_json("/v1/faces/compare", {"face_1": a["id"], "face_2": b["id"]})
    assert reply.status == 200 and reply.json["match"] is False
    assert reply.json["distance"] == pytest.approx(expected_distance("person01_04.jpg", "person05_01.jpg"), abs=TOLERANCE)


def test_self_distance_is_zero_and_printed(rest: Rest) -> None:
    a = enrol(rest, "person03_05.jpg")
    reply = rest.post_json("/v1/faces/compare", {"face_1": a["id"], "face_2": a["id"]})
    assert reply.status == 200
    assert reply.json == {"distance": 0.0, "threshold": pytest.approx(0.6), "match": True}


def test_compare_images(rest: Rest) -> None:
    same = rest.upload("/v1/faces/compare-images", {"face1": photo("person01_04.jpg"), "face2": photo("person01_05.jpg")})
    assert same.status == 200, same.body
    assert same.json["match"] is True
    assert same.json["distance"] == pytest.approx(expected_distance("person01_04.jpg", "person01_05.jpg"), abs=TOLERANCE)
    different = rest.upload("/v1/faces/compare-images", {"face1": photo("person01_04.jpg"), "face2": photo("person03_05.jpg")})
    assert different.status == 200 and different.json["match"] is False


def test_compare_mixt(rest: Rest) -> None:
    enrolled = enrol(rest, "person05_01.jpg")
    same = rest.upload("/v1/faces/compare-mixt", {"face": photo("person05_02.jpg")}, {"face_id": enrolled["id"]})
    assert same.status == 200, same.body
    assert same.json["match"] is True
    other = rest.upload("/v1/faces/compare-mixt", {"face": photo("person01_05.jpg")}, {"face_id": enrolled["id"]})
    assert other.status == 200 and other.json["match"] is False
    unknown = rest.upload("/v1/faces/compare-mixt", {"face": photo("person05_02.jpg")}, {"face_id": "no-such-id"})
    assert unknown.status == 404 and unknown.reason == "FACE_NOT_FOUND"
    missing = rest.upload("/v1/faces/compare-mixt", {"face": photo("person05_02.jpg")})
    assert missing.status == 400 and missing.reason == "FIELD_MISSING" and "face_id" in missing.json["message"]


def test_detect_returns_descriptor_and_stores_nothing(rest: Rest) -> None:
    before = len(rest.get("/v1/faces").json)
    reply = rest.upload("/v1/faces/detect", {"face": photo("person01_05.jpg")})
    assert reply.status == 200, reply.body
    assert len(reply.json["descriptor"]) == 128
    assert reply.json["bounding_box"]["right"] > reply.json["bounding_box"]["left"]
    assert len(rest.get("/v1/faces").json) == before


def test_detect_all_reports_every_face(rest: Rest) -> None:
    reply = rest.upload("/v1/faces/detect-all", {"face": (EDGE / "two_faces.jpg").read_bytes()})
    assert reply.status == 200, reply.body
    assert reply.json["total_found"] == 2 and len(reply.json["faces"]) == 2
    assert all(len(face["descriptor"]) == 128 for face in reply.json["faces"])


@pytest.mark.parametrize(
    ("path", "files", "field"),
    [
        ("/v1/faces", {"face": "noface_04.jpg"}, "face"),
        ("/v1/faces/detect", {"face": "noface_04.jpg"}, "face"),
        ("/v1/faces/compare-images", {"face1": "noface_04.jpg", "face2": "person01_04.jpg"}, "face1"),
        ("/v1/faces/compare-images", {"face1": "person01_04.jpg", "face2": "noface_04.jpg"}, "face2"),
    ],
)
def test_no_face_names_the_field(rest: Rest, path: str, files: dict[str, str], field: str) -> None:
    reply = rest.upload(path, {name: photo(file) for name, file in files.items()})
    assert reply.status == 400
    assert reply.reason == "NO_FACE"
    assert repr(field) in reply.json["message"]
    assert reply.error_metadata()["field"] == field


@pytest.mark.parametrize(("path", "field"), [("/v1/faces", "face"), ("/v1/faces/compare-images", "face2")])
def test_two_faces_is_an_error_with_the_count(rest: Rest, path: str, field: str) -> None:
    files = {"face": (EDGE / "two_faces.jpg").read_bytes()}
    if path.endswith("compare-images"):
        files = {"face1": photo("person01_04.jpg"), "face2": (EDGE / "two_faces.jpg").read_bytes()}
    reply = rest.upload(path, files)
    assert reply.status == 400
    assert reply.reason == "MULTIPLE_FACES"
    assert reply.error_metadata() == {"field": field, "face_count": "2"}
    assert "2 faces" in reply.json["message"] and repr(field) in reply.json["message"]


def test_missing_file_field(rest: Rest) -> None:
    reply = rest.upload("/v1/faces", {"photo": photo("person01_04.jpg")})
    assert reply.status == 400 and reply.reason == "FIELD_MISSING"
    assert "'face'" in reply.json["message"]
    reply = rest.upload("/v1/faces/compare-images", {"face1": photo("person01_04.jpg")})
    assert reply.status == 400 and reply.reason == "FIELD_MISSING" and "'face2'" in reply.json["message"]


def test_not_an_image(rest: Rest) -> None:
    reply = rest.upload("/v1/faces", {"face": b"this is plainly not a picture\n" * 4})
    assert reply.status == 415 and reply.reason == "IMAGE_NOT_RECOGNIZED"
    assert "JPEG" in reply.json["message"]


def test_json_instead_of_multipart(rest: Rest) -> None:
    reply = rest.post_json("/v1/faces", {"face": "person.jpg"})
    assert reply.status == 400 and reply.reason == "REQUEST_BODY_INVALID"
    assert "multipart/form-data" in reply.json["message"]


def test_compare_requires_both_ids(rest: Rest) -> None:
    reply = rest.post_json("/v1/faces/compare", {"face_1": "x"})
    assert reply.status == 400 and reply.reason == "FIELD_MISSING" and "face_2" in reply.json["message"]


def test_unknown_face_is_404(rest: Rest) -> None:
    reply = rest.get("/v1/faces/00000000-0000-0000-0000-000000000000")
    assert reply.status == 404 and reply.reason == "FACE_NOT_FOUND"
    reply = rest.post_json("/v1/faces/compare", {"face_1": "missing-1", "face_2": "missing-2"})
    assert reply.status == 404 and reply.reason == "FACE_NOT_FOUND"


def test_missing_wrong_and_revoked_keys(service: ServiceProcess, alice_key: str, revoked_key: str) -> None:
    cases = {
        None: "API_KEY_MISSING",
        "": "API_KEY_MISSING",
        "not-a-key": "API_KEY_INVALID",
        alice_key[:-2] + ("AA" if not alice_key.endswith("AA") else "BB"): "API_KEY_INVALID",
        revoked_key: "API_KEY_REVOKED",
        f"Bearer {revoked_key}": "API_KEY_REVOKED",
    }
    for key, reason in cases.items():
        reply = Rest(service.http_base, key).get("/v1/faces")
        assert reply.status == 401, (key, reply.body)
        assert reply.reason == reason
        assert reply.json["message"]


def test_bearer_prefix_accepted(service: ServiceProcess, alice_key: str) -> None:
    assert Rest(service.http_base, f"Bearer {alice_key}").get("/v1/faces").status == 200


def test_another_owners_face_is_not_found(rest: Rest, bob_rest: Rest) -> None:
    alices = enrol(rest, "person01_04.jpg")
    bobs = enrol(bob_rest, "person01_05.jpg")
    assert bob_rest.get(f"/v1/faces/{alices['id']}").status == 404
    assert bob_rest.delete(f"/v1/faces/{alices['id']}").status == 404
    assert bob_rest.upload(f"/v1/faces/{alices['id']}", {"face": photo("person01_05.jpg")}, method="PUT").status == 404
    compare = bob_rest.post_json("/v1/faces/compare", {"face_1": alices["id"], "face_2": bobs["id"]})
    assert compare.status == 404 and compare.reason == "FACE_NOT_FOUND"
    mixt = bob_rest.upload("/v1/faces/compare-mixt", {"face": photo("person01_05.jpg")}, {"face_id": alices["id"]})
    assert mixt.status == 404
    assert alices["id"] not in [f["id"] for f in bob_rest.get("/v1/faces").json]
    assert rest.get(f"/v1/faces/{alices['id']}").status == 200


def test_errors_never_have_an_empty_body(rest: Rest) -> None:
    for reply in (
        rest.get("/v1/nothing-here"),
        rest.request("PATCH", "/v1/faces"),
        rest.request("POST", "/v1/faces/compare", b"{not json", "application/json"),
        rest.get("/v1/faces?colour=blue"),
    ):
        assert 400 <= reply.status < 500, (reply.status, reply.body)
        assert reply.json["message"] and reply.json["details"], reply.body


def test_long_and_undecodable_ids_are_client_errors(rest: Rest) -> None:
    long_id = "a" * 20_000
    reply = rest.post_json("/v1/faces/compare", {"face_1": long_id, "face_2": "x"})
    assert reply.status == 400 and reply.reason == "FACE_ID_INVALID"
    assert len(reply.body) < 2000
    reply = rest.upload("/v1/faces/compare-mixt", {"face": photo("person01_05.jpg")}, {"face_id": "b" * 5000})
    assert reply.status == 400 and reply.reason == "FACE_ID_INVALID"
    for path in ("/v1/faces/%ff", "/v1/faces?page_token=%ff%fe"):
        reply = rest.get(path)
        assert reply.status == 400, (path, reply.body)
        assert reply.reason == "REQUEST_UNDECODABLE"
        assert "DecodeError" not in reply.json["message"]


def test_duplicate_photo_field_is_refused(rest: Rest) -> None:
    part = b'--XyZ\r\nContent-Disposition: form-data; name="face"; filename="a.jpg"\r\n\r\n%s\r\n'
    body = part % photo("person01_04.jpg") + part % photo("person05_01.jpg") + b"--XyZ--\r\n"
    reply = rest.request("POST", "/v1/faces", body, "multipart/form-data; boundary=XyZ")
    assert reply.status == 400 and reply.reason == "REQUEST_BODY_INVALID"
    assert "more than once" in reply.json["message"]


def test_field_violations_name_the_reason(rest: Rest) -> None:
    reply = rest.upload("/v1/faces", {"face": photo("noface_04.jpg")})
    violations = [d for d in reply.json["details"] if d["@type"].endswith("BadRequest")]
    violation = violations[0]["field_violations"][0]
    assert violation["field"] == "face" and violation["reason"] == "NO_FACE"
    assert violation["description"] == reply.json["message"]


def test_a_non_ascii_key_is_a_clean_401(service: ServiceProcess) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", service.http_port, timeout=30)
    connection.putrequest("GET", "/v1/faces")
    connection.putheader("Authorization", b"visio_\xff\xfe")
    connection.endheaders()
    reply = connection.getresponse()
    body = reply.read()
    connection.close()
    assert reply.status == 401 and b"API_KEY_INVALID" in body
    assert not any("UnicodeDecodeError" in line for line in service.output)
