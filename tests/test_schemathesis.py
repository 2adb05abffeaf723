"""Schemathesis over the served OpenAPI document, against the app in process (WSGI).

The document is fetched from /api/openapi.json as a logged-in user, checked against the OpenAPI
3.0 schema, then every operation gets generated requests, valid and invalid (wrong types,
missing fields, out-of-range values), as an annotator and as an admin (session cookie and
CSRF header, as the browser sends them), with stateful runs that chain box operations through
the document's links (draw a box, then change, delete or undo it). Each answer must
not be a 5xx, must have a documented status code and must match that status's schema.

Generated path ids are mixed with ids that exist, and generated boxes with boxes inside the
frame, so that the successful answers are checked too, not only the 404s and 400s.
Examples are derandomized: the same requests on every run.
"""
from __future__ import annotations

import collections

import schemathesis
from helpers import seed_scene
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
import pytest

# Generated inputs by the hundred: part of `make test`, not of the fast loop.
pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
ROLES = ("annotator", "admin")
EXAMPLES = 9  # per operation, role and mode: about 570 requests, then the stateful runs
BOX_OPERATIONS = ["createBox", "updateBox", "deleteBox", "revertEvents"]


def _settings(**kw) -> settings:
    return settings(deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck), **kw)


def _load(app, login, known: dict[str, list[int]]):
    """The served document as a schemathesis schema, steered towards the ids in ``known``."""
    raw = login("admin").get("/api/openapi.json").get_json()
    validate(raw)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        if not path_parameters:
            return st.just(path_parameters)
        real = st.fixed_dictionaries({k: st.sampled_from(known[k]) if k in known else st.just(v)
                                      for k, v in path_parameters.items()})
        return st.one_of(st.just(path_parameters), real)

    @schema.hook
    def flatmap_body(context, body):
        if not isinstance(body, dict) or not all(
                isinstance(body.get(k), (int, float)) and not isinstance(body.get(k), bool) for k in "xywh"):
            return st.just(body)
        inside = st.fixed_dictionaries({"class_id": st.sampled_from([1, 2]), "x": st.floats(0, 100),
                                        "y": st.floats(0, 80), "w": st.floats(0.5, 50),
                                        "h": st.floats(0.5, 30)})
        return st.one_of(st.just(body), inside.map(lambda box: {**body, **box}))

    return schema


def test_the_served_document_is_valid_openapi_3_0_with_every_error_answer(app, login):
    raw = login("annotator").get("/api/openapi.json").get_json()
    validate(raw)  # e.g. exclusiveMinimum is a boolean beside minimum in 3.0, not a number
    create = raw["paths"]["/api/frames/{frame_id}/boxes"]["post"]
    assert set(create["responses"]) == {"201", "400", "401", "403", "404", "409", "413"}
    for path, operations in raw["paths"].items():
        for method, op in operations.items():
            assert "401" in op["responses"], (method, path)
            for code, answer in op["responses"].items():
                if code >= "400":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)


def test_generated_requests_get_documented_answers(app, login):
    known: dict[str, list[int]] = {}
    schema = _load(app, login, known)
    sessions = {role: login(role) for role in ROLES}
    auth = {role: {"headers": {"X-CSRFToken": s.csrf},
                   "cookies": {"session": s.client.get_cookie("session").value}}
            for role, s in sessions.items()}

    def fresh_scenes(role: str, phase: str) -> None:
        """Scenes of the user's own (the other's run may have submitted, so locked, its own)."""
        seeded = [seed_scene(app, frames=3, prelabels=6, patient=f"{role}-{phase}-{i}") for i in range(2)]
        known.update(scene_id=[x.scene_id for x in seeded], frame_id=[f for x in seeded for f in x.frame_ids],
                     box_id=[b for x in seeded for b in x.prelabel_ids])

    answers: collections.Counter = collections.Counter()
    for role in ROLES:
        fresh_scenes(role, "generated")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @_settings(max_examples=EXAMPLES, phases=[Phase.explicit, Phase.generate])
                @given(case=operation.as_strategy(generation_mode=mode))
                def call(case):
                    response = case.call(**auth[role])
                    answers[(operation.label, response.status_code)] += 1
                    case.validate_response(response, checks=CHECKS, headers=auth[role]["headers"])

                call()
    assert sum(answers.values()) >= 500
    # Successes were reached and checked too, not only refusals.
    reached = {label for label, status in answers if status < 300}
    for label in ("POST /api/frames/{frame_id}/boxes", "GET /api/scenes/{scene_id}",
                  "POST /api/frames/{frame_id}/accept-above"):
        assert label in reached, (label, sorted(answers.items()))

    # Then chains of box operations through the links. Whether a step follows a link is drawn
    # with true randomness (schemathesis keeps it out of Hypothesis's replay): these runs come
    # last, so the ones above stay the same on every run, and the links' successes are checked
    # in the test below.
    for role in ROLES:
        fresh_scenes(role, "linked")

        class Machine(schema.include(operation_id=BOX_OPERATIONS).as_state_machine()):
            def get_call_kwargs(self, case):
                return auth[role]

            def after_call(self, response, case):
                answers[(case.operation.label, response.status_code)] += 1

            def validate_response(self, response, case, additional_checks=None, **kwargs):
                case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

        Machine.run(settings=_settings(max_examples=6, stateful_step_count=8))
    assert not any(status >= 500 for _, status in answers)


def _pointer(document: dict, expression: str):
    """The value a ``$response.body#/a/b`` runtime expression names in ``document``."""
    value = document
    for part in expression.split("#", 1)[1].strip("/").split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_the_links_of_a_drawn_box_lead_to_its_change_removal_and_undo(app, login):
    seeded = seed_scene(app, frames=1)
    s = login("annotator")
    raw = s.get("/api/openapi.json").get_json()
    by_id = {op["operationId"]: (path, method) for path, ops in raw["paths"].items()
             for method, op in ops.items()}
    draw = raw["paths"]["/api/frames/{frame_id}/boxes"]["post"]
    links = draw["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {"updateBox", "deleteBox", "revertEvents"}
    for name, link in links.items():
        created = s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
                         {"class_id": 1, "x": 10, "y": 10, "w": 20, "h": 20}).get_json()
        path, method = by_id[link["operationId"]]
        for param, expression in link.get("parameters", {}).items():
            path = path.replace("{" + param + "}", str(_pointer(created, expression)))
        body = {k: _pointer(created, v) for k, v in link.get("requestBody", {}).items()}
        if link["operationId"] == "updateBox":
            body["x"] = 12  # the link carries the version; the change is the client's
        resp = s.json(method.upper(), path, body)
        assert resp.status_code == 200, (name, resp.get_json())
