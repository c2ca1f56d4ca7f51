"""Each pod's scraped metrics carry ``instance`` (the pod) and the Deployment's ``version`` (pure functions).

Without ``instance`` the analysis summed every pod's counters per version, and a pod missing from
one scrape (or restarted, or new) made the sum drop: read as a counter reset, a failing candidate
passed. Each labelled line must still parse, label for label, as the analysis reads it.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from planner.rollout.analysis import _SAMPLE, _labels, parse_metrics
from providers.exposition import relabel, with_instance

SCRAPE = """\
# HELP mlops_requests_total Scoring requests by status class.
# TYPE mlops_requests_total counter
mlops_requests_total{version="started-as",code="2xx"} 12
mlops_requests_total{code="5xx",version="started-as"} 3 1700000000000
mlops_request_seconds_bucket{version="started-as",le="+Inf"} 15

process_open_fds 7
up{} 1
"""


def test_every_sample_gets_the_pod_as_instance_and_comments_stay():
    out = relabel(SCRAPE, "v2", "echo-api-canary-7d9f-x1")
    assert out.split("\n") == [
        "# HELP mlops_requests_total Scoring requests by status class.",
        "# TYPE mlops_requests_total counter",
        'mlops_requests_total{version="v2",code="2xx",instance="echo-api-canary-7d9f-x1"} 12',
        'mlops_requests_total{code="5xx",version="v2",instance="echo-api-canary-7d9f-x1"} 3 1700000000000',
        'mlops_request_seconds_bucket{version="v2",le="+Inf",instance="echo-api-canary-7d9f-x1"} 15',
        "",
        'process_open_fds{instance="echo-api-canary-7d9f-x1"} 7',
        'up{instance="echo-api-canary-7d9f-x1"} 1',
        "",
    ]
    # What the analysis reads of it is unchanged (instance is an extra label it may use).
    assert parse_metrics(out) == parse_metrics(SCRAPE.replace("started-as", "v2"))


def test_an_instance_the_runtime_set_is_replaced_and_odd_values_survive():
    assert with_instance('m{instance="old", code="2xx"} 1', "pod-a") == 'm{instance="pod-a", code="2xx"} 1'
    assert with_instance('m{code="2xx", instance="old"} 1', "pod-a") == 'm{code="2xx", instance="pod-a"} 1'
    assert with_instance('m{path="/a}b",code="2xx",} 1', "p") == 'm{path="/a}b",code="2xx",instance="p"} 1'
    assert with_instance('m{q="say \\"}\\""} 1', "p") == 'm{q="say \\"}\\"",instance="p"} 1'
    assert with_instance("m 1", 'a"b\\c') == 'm{instance="a\\"b\\\\c"} 1'
    for untouched in ("# TYPE m counter", "#", "", "   ", 'm{code="2xx" 1', "{} 1"):
        assert with_instance(untouched, "p") == untouched
    assert relabel("m 1", "v", "p") == 'm{instance="p"} 1\n' and relabel("", "v", "p") == ""
    assert relabel('mlops_x{version="a"} 1\n', 'v\\"', "p") == 'mlops_x{version="v\\\\\\"",instance="p"} 1\n'


names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "instance")
values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@given(st.dictionaries(names, values, max_size=4), values, st.booleans())
def test_a_labelled_sample_parses_to_its_labels_plus_instance(labels, instance, braces):
    def quoted(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inside = ",".join(f'{k}="{quoted(v)}"' for k, v in labels.items())
    line = f"mlops_requests_total{{{inside}}} 4" if labels or braces else "mlops_requests_total 4"
    match = _SAMPLE.match(with_instance(line, instance))
    assert match is not None and match.group(1) == "mlops_requests_total" and match.group(3) == "4"
    assert _labels(match.group(2)) == {**labels, "instance": instance}
