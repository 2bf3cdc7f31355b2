"""/temp-queue/ request/reply between two connections (shards 1 and 2)."""

from conftest import BOTH_SHARDS, send_sync, subscribe_sync, uniq

pytestmark = BOTH_SHARDS


def test_temp_queue_request_reply(stomp_client):
    service_q = f"/queue/{uniq('svc')}"
    replier, rlis = stomp_client()
    subscribe_sync(replier, rlis, service_q)

    requester, qlis = stomp_client()
    send_sync(requester, qlis, service_q, "ping", headers={"reply-to": "/temp-queue/answers"})

    (req,) = rlis.wait_messages(1)
    assert req.body == "ping"
    reply_to = req.headers.get("reply-to", "")
    assert reply_to.startswith("/reply-queue/"), f"reply-to not rewritten: {req.headers}"
    assert len(reply_to) > len("/reply-queue/")

    send_sync(replier, rlis, reply_to, "pong", headers={"correlation-id": "c-1"})
    (rep,) = qlis.wait_messages(1)
    assert rep.body == "pong"
    assert rep.headers.get("subscription") == "/temp-queue/answers", rep.headers
    assert rep.headers.get("correlation-id") == "c-1"


def test_temp_queue_two_requests_same_name(stomp_client):
    """Several requests with the same temp-queue name share one reply queue per connection."""
    service_q = f"/queue/{uniq('svc')}"
    replier, rlis = stomp_client()
    subscribe_sync(replier, rlis, service_q)
    requester, qlis = stomp_client()
    for i in range(2):
        send_sync(requester, qlis, service_q, f"req{i}", headers={"reply-to": "/temp-queue/r"})
    reqs = rlis.wait_messages(2)
    assert reqs[0].headers["reply-to"] == reqs[1].headers["reply-to"]
    for r in reqs:
        send_sync(replier, rlis, r.headers["reply-to"], "re:" + r.body)
    reps = qlis.wait_messages(2)
    assert sorted(m.body for m in reps) == ["re:req0", "re:req1"]


def test_temp_queues_are_private_per_connection(stomp_client):
    """Two requesters using the same temp-queue name each get only their own reply."""
    service_q = f"/queue/{uniq('svc')}"
    replier, rlis = stomp_client()
    subscribe_sync(replier, rlis, service_q)
    a, alis = stomp_client()
    b, blis = stomp_client()
    send_sync(a, alis, service_q, "from-a", headers={"reply-to": "/temp-queue/same"})
    send_sync(b, blis, service_q, "from-b", headers={"reply-to": "/temp-queue/same"})
    reqs = rlis.wait_messages(2)
    assert reqs[0].headers["reply-to"] != reqs[1].headers["reply-to"]
    for r in reqs:
        send_sync(replier, rlis, r.headers["reply-to"], "re:" + r.body)
    assert [m.body for m in alis.wait_messages(1)] == ["re:from-a"]
    assert [m.body for m in blis.wait_messages(1)] == ["re:from-b"]
    assert len(alis.quiet_for(0.3)) == 1 and len(blis.messages) == 1
