//! GetContainerEvents through the socket: what kubelet's Evented PLEG
//! reads. One client's stream sees another client's pods and containers
//! change, in order, with the pod's status and its containers' statuses;
//! exits arrive while no RPC runs (an exit code, an OOM kill); a
//! subscriber that does not read loses the oldest events and holds
//! nothing up.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;

type Events = tonic::Streaming<ContainerEventResponse>;

async fn subscribe(env: &Env) -> Events {
    let mut c = env.client().await;
    c.runtime
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn kind(e: &ContainerEventResponse) -> &'static str {
    match ContainerEventType::try_from(e.container_event_type).unwrap() {
        ContainerEventType::ContainerCreatedEvent => "created",
        ContainerEventType::ContainerStartedEvent => "started",
        ContainerEventType::ContainerStoppedEvent => "stopped",
        ContainerEventType::ContainerDeletedEvent => "deleted",
    }
}

/// Reads events until `done` holds for the ones read so far.
async fn read_until(
    s: &mut Events,
    timeout: Duration,
    done: impl Fn(&[ContainerEventResponse]) -> bool,
) -> Vec<ContainerEventResponse> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(e)) => got.push(e.unwrap()),
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!(
                "timed out; events so far: {:?}",
                got.iter()
                    .map(|e| (e.container_id.clone(), kind(e)))
                    .collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// The kinds of the events about `id`, in order.
fn kinds_of(events: &[ContainerEventResponse], id: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.container_id == id)
        .map(kind)
        .collect()
}

fn status_of<'a>(e: &'a ContainerEventResponse, id: &str) -> Option<&'a ContainerStatus> {
    e.containers_statuses.iter().find(|s| s.id == id)
}

#[tokio::test]
async fn events_follow_another_clients_pods_and_containers() {
    let env = env("").await;
    // Two readers, subscribed before anything happens.
    let mut a = subscribe(&env).await;
    let mut b = subscribe(&env).await;

    let mut c = env.client().await;
    let pc = pod_config("events", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    // Exits by itself: its stopped event comes with no RPC running.
    let quits = created(
        &mut c,
        &pod,
        &pc,
        ("quits", &env.image),
        &["sh", "-c", "sleep 1; exit 3"],
    )
    .await;
    let hog = create(&mut c, &pod, &pc, memory_hog("hog", &env.image))
        .await
        .unwrap();
    start(&mut c, &quits).await;
    start(&mut c, &hog).await;

    let stopped_both = |ev: &[ContainerEventResponse]| {
        [&quits, &hog]
            .iter()
            .all(|id| kinds_of(ev, id).contains(&"stopped"))
    };
    let first = read_until(&mut a, Duration::from_secs(60), stopped_both).await;
    assert_eq!(kinds_of(&first, &pod), ["created", "started"]);
    for id in [&quits, &hog] {
        assert_eq!(kinds_of(&first, id), ["created", "started", "stopped"]);
    }
    // The pod's own events come first; a container's created event
    // carries it in the pod's list.
    assert_eq!(first[0].container_id, pod);
    let created = first
        .iter()
        .find(|e| e.container_id == quits && kind(e) == "created")
        .unwrap();
    assert_eq!(
        status_of(created, &quits).unwrap().state,
        ContainerState::ContainerCreated as i32
    );
    // Every event describes the pod, by the metadata kubelet keys it on.
    for e in &first {
        let p = e.pod_sandbox_status.as_ref().unwrap();
        assert_eq!(p.id, pod);
        assert_eq!(p.metadata, pc.metadata);
        assert_eq!(p.state, PodSandboxState::SandboxReady as i32);
    }
    // The exits, as the monitor recorded them.
    let stop_of = |id: &str| {
        first
            .iter()
            .find(|e| e.container_id == id && kind(e) == "stopped")
            .unwrap()
    };
    let s = status_of(stop_of(&quits), &quits).unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, 3, "Error")
    );
    let s = status_of(stop_of(&hog), &hog).unwrap();
    assert_eq!(
        (s.state, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, "OOMKilled"),
        "{s:?}"
    );
    // Timestamps never go back.
    assert!(first.windows(2).all(|w| w[0].created_at <= w[1].created_at));

    // Removal: the container's deleted event lists the pod without it;
    // the pod's own stopped and deleted events follow.
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: quits.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut c, &pod).await;
    let rest = read_until(&mut a, Duration::from_secs(30), |ev| {
        kinds_of(ev, &pod).contains(&"deleted")
    })
    .await;
    assert_eq!(kinds_of(&rest, &quits), ["deleted"]);
    assert_eq!(kinds_of(&rest, &hog), ["deleted"]);
    assert_eq!(kinds_of(&rest, &pod), ["stopped", "deleted"]);
    let deleted = rest.iter().find(|e| e.container_id == quits).unwrap();
    assert!(status_of(deleted, &quits).is_none());
    assert!(status_of(deleted, &hog).is_some());
    let last = rest.last().unwrap();
    assert_eq!(last.container_id, pod);
    assert_eq!(
        last.pod_sandbox_status.as_ref().unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );

    // The second reader saw the same events in the same order.
    let all: Vec<_> = first.iter().chain(rest.iter()).collect();
    let seen_b = read_until(&mut b, Duration::from_secs(10), |ev| ev.len() >= all.len()).await;
    let key = |e: &ContainerEventResponse| (e.container_id.clone(), kind(e), e.created_at);
    assert_eq!(
        seen_b.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(|e| key(e)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_loses_the_oldest_and_blocks_nothing() {
    let env = env("container_events_buffer = 4").await;
    let mut slow = subscribe(&env).await;
    let mut reader = subscribe(&env).await;
    // The reader keeps up in the background.
    let reading = tokio::spawn(async move {
        let mut n = HashMap::<String, usize>::new();
        let mut order = Vec::new();
        while let Some(Ok(e)) = reader.next().await {
            *n.entry(kind(&e).to_string()).or_default() += 1;
            order.push(e.container_id.clone());
            if order.len() == 2 + 4 * 6 {
                break;
            }
        }
        n
    });

    // Large annotations make the events outgrow what HTTP/2 lets the
    // transport hold for a reader that does not read (hyper's 2 MiB
    // stream window), so the slow subscriber's own buffer fills.
    let mut c = env.client().await;
    let mut pc = pod_config("slow", &env.logs);
    pc.annotations.insert("big".into(), "x".repeat(256 << 10));
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let started = std::time::Instant::now();
    let mut last = String::new();
    for i in 0..6 {
        let id = created(&mut c, &pod, &pc, (&format!("c{i}"), &env.image), &["true"]).await;
        start(&mut c, &id).await;
        wait_exited(&mut c, &id, Duration::from_secs(20)).await;
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        last = id;
    }
    // Nothing waited for the slow subscriber.
    assert!(started.elapsed() < Duration::from_secs(30));
    let n = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (n["created"], n["started"], n["stopped"], n["deleted"]),
        (7, 7, 6, 6),
        "{n:?}"
    );

    // The slow one lost events but has the newest: it ends with the last
    // container's deletion.
    let got = read_until(&mut slow, Duration::from_secs(10), |ev| {
        ev.last()
            .is_some_and(|e| e.container_id == last && kind(e) == "deleted")
    })
    .await;
    assert!(got.len() < 2 + 4 * 6, "{} events", got.len());
    assert!(
        env.daemon.log().contains("slow subscriber lost"),
        "{}",
        env.daemon.log()
    );
    remove_pod(&mut c, &pod).await;
}
