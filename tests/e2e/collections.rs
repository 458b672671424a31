//! Declared collections end to end: CRUD with ETag/If-Match, every change an event in commit
//! order, filters/sort/pagination, errors that change nothing, tasks through the outbox.

use std::time::Duration;

use courier_core::subjects::TASKS_STREAM;
use courier_tests::{Stack, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_in_order_without_duplicates, assert_no_event, collect_events};

/// Sends `method path` with an optional JSON body and headers; returns status, ETag, body.
pub async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut request = stack.http.request(method, format!("{}{path}", stack.api.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    (status, etag, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_flow_create_patch_delete_notifies_three_times() {
    let stack = Stack::start().await;
    let mut all = stack.ws().await;
    all.subscribe("desks", None, None).await.unwrap();

    let (status, etag, desk) = call(
        &stack,
        Method::POST,
        "/api/v1/desks",
        Some(json!({"name": "Standing", "width": 120, "height": 75})),
        &[],
    )
    .await;
    assert_eq!((status, etag.as_deref()), (StatusCode::CREATED, Some("\"1\"")));
    let id = desk["id"].as_str().unwrap().to_owned();
    let mut one = stack.ws().await;
    one.subscribe(&format!("desks:{id}"), Some(0), None).await.unwrap();

    let (status, etag, patched) = call(
        &stack,
        Method::PATCH,
        &format!("/api/v1/desks/{id}"),
        Some(json!({"height": 110})),
        &[],
    )
    .await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"2\"")));
    assert_eq!(patched, json!({"id": id, "name": "Standing", "width": 120, "height": 110}));

    let (status, _, read) =
        call(&stack, Method::GET, &format!("/api/v1/desks/{id}"), None, &[]).await;
    assert_eq!((status, &read), (StatusCode::OK, &patched));

    let (status, _, _) =
        call(&stack, Method::DELETE, &format!("/api/v1/desks/{id}"), None, &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(&stack, Method::GET, &format!("/api/v1/desks/{id}"), None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for ws in [&mut all, &mut one] {
        let got = collect_events(ws, 3, Duration::from_secs(10)).await;
        assert_in_order_without_duplicates(&got);
        let types: Vec<&str> = got.iter().map(|g| g.event.event_type.as_str()).collect();
        assert_eq!(types, ["desks.created", "desks.updated", "desks.deleted"]);
        assert_eq!(got[0].event.data, desk);
        assert_eq!(got[1].event.data, patched);
        assert_eq!(got[2].event.data, patched, "a delete event carries the last state");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_replaces_and_a_stale_if_match_is_refused_without_any_effect() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("desks", None, None).await.unwrap();
    let (_, _, desk) = call(
        &stack,
        Method::POST,
        "/api/v1/desks",
        Some(json!({"name": "A", "width": 1, "height": 2})),
        &[],
    )
    .await;
    let path = format!("/api/v1/desks/{}", desk["id"].as_str().unwrap());

    let replacement = json!({"id": desk["id"], "name": "B", "width": 3, "height": 4});
    let (status, etag, replaced) =
        call(&stack, Method::PUT, &path, Some(replacement.clone()), &[("if-match", "\"1\"")]).await;
    assert_eq!((status, etag.as_deref(), &replaced), (StatusCode::OK, Some("\"2\""), &replacement));

    // Stale writers lose, whatever they send.
    for (method, body) in [
        (Method::PUT, Some(json!({"name": "C", "width": 5, "height": 6}))),
        (Method::PATCH, Some(json!({"width": 9}))),
        (Method::DELETE, None),
    ] {
        let (status, _, error) =
            call(&stack, method.clone(), &path, body, &[("if-match", "\"1\"")]).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{method}: {error}");
        assert_eq!(error["error"]["code"], "precondition_failed");
    }
    let (status, _, _) =
        call(&stack, Method::GET, &path, None, &[("if-none-match", "\"2\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (_, etag, current) = call(&stack, Method::GET, &path, None, &[]).await;
    assert_eq!((etag.as_deref(), current), (Some("\"2\""), replacement));

    let got = collect_events(&mut ws, 2, Duration::from_secs(10)).await;
    assert_eq!(got[1].event.event_type, "desks.updated");
    assert_no_event(&mut ws, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_change_is_refused_and_changes_nothing() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("desks", None, None).await.unwrap();
    let (_, _, desk) = call(
        &stack,
        Method::POST,
        "/api/v1/desks",
        Some(json!({"name": "A", "width": 1, "height": 2})),
        &[],
    )
    .await;
    let id = desk["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/desks/{id}");
    assert_eq!(
        collect_events(&mut ws, 1, Duration::from_secs(10)).await[0].event.event_type,
        "desks.created"
    );

    // 422: a patch whose result breaks the schema names the fields.
    let (status, _, error) =
        call(&stack, Method::PATCH, &path, Some(json!({"width": -1, "height": null})), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = error["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["height", "width"]);
    // 422: a PUT missing fields, and an id that is not this document's.
    let (status, _, _) = call(&stack, Method::PUT, &path, Some(json!({"name": "B"})), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, error) = call(
        &stack,
        Method::PUT,
        &path,
        Some(json!({"id": "65f0c0ffee0123456789abcd", "name": "B", "width": 1, "height": 1})),
        &[],
    )
    .await;
    assert_eq!(
        (status, error["error"]["fields"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id"))
    );
    // 404 unknown id, 400 malformed id, 404 unknown collection.
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let body =
            (method != Method::DELETE).then(|| json!({"name": "B", "width": 1, "height": 1}));
        let (status, _, _) = call(
            &stack,
            method.clone(),
            "/api/v1/desks/65f0c0ffee0123456789abcd",
            body.clone(),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        let (status, _, _) =
            call(&stack, method.clone(), "/api/v1/desks/nope", body.clone(), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}");
        let (status, _, _) =
            call(&stack, method.clone(), &format!("/api/v1/chairs/{id}"), body, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    // 415 and 413 on updates too.
    let response = stack
        .http
        .patch(format!("{}{path}", stack.api.url()))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"name": "x".repeat(300 * 1024), "width": 1, "height": 1});
    let response =
        stack.http.put(format!("{}{path}", stack.api.url())).json(&huge).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let (_, etag, current) = call(&stack, Method::GET, &path, None, &[]).await;
    assert_eq!((etag.as_deref(), current), (Some("\"1\""), desk), "nothing was written");
    assert_no_event(&mut ws, Duration::from_millis(800)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_document_are_announced_in_commit_order() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("desks", None, None).await.unwrap();
    let (_, _, desk) = call(
        &stack,
        Method::POST,
        "/api/v1/desks",
        Some(json!({"name": "A", "width": 1, "height": 1})),
        &[],
    )
    .await;
    let id = desk["id"].as_str().unwrap().to_owned();
    assert_eq!(
        collect_events(&mut ws, 1, Duration::from_secs(10)).await[0].event.event_type,
        "desks.created"
    );

    let updates = (2..=9).map(|width| {
        let stack = &stack;
        let path = format!("/api/v1/desks/{id}");
        async move { call(stack, Method::PATCH, &path, Some(json!({"width": width})), &[]).await }
    });
    let results = futures::future::join_all(updates).await;
    // Each accepted update has a distinct version; map version → the width it stored.
    let mut by_version: Vec<(i64, Value)> = results
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::OK)
        .map(|(_, etag, body)| {
            (etag.as_deref().unwrap().trim_matches('"').parse().unwrap(), body["width"].clone())
        })
        .collect();
    by_version.sort_by_key(|(v, _)| *v);
    // Racing writers are retried on the fresh document; any that still lose get a clean 409.
    assert!(
        results.iter().all(|(s, _, _)| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{results:?}"
    );
    assert!(by_version.len() >= 4, "most concurrent updates succeed: {results:?}");
    let versions: Vec<i64> = by_version.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (2..2 + by_version.len() as i64).collect::<Vec<_>>(),
        "versions are consecutive"
    );

    let got = collect_events(&mut ws, by_version.len(), Duration::from_secs(15)).await;
    assert_in_order_without_duplicates(&got);
    let announced: Vec<Value> = got.iter().map(|g| g.event.data["width"].clone()).collect();
    let committed: Vec<Value> = by_version.into_iter().map(|(_, w)| w).collect();
    assert_eq!(announced, committed, "events follow the commit order of the document's versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_sort_and_cursors_page_through_a_stable_order() {
    let stack = Stack::start().await;
    let auth = format!("Bearer {}", stack.token("ana").await);
    let pets = [
        ("Rex", "Dog", 3, true),
        ("Tom", "Cat", 5, false),
        ("Fido", "Dog", 3, false),
        ("Nemo", "Fish", 1, true),
        ("Max", "Dog", 7, true),
        ("Luna", "Cat", 3, true),
    ];
    for (name, species, age, vaccinated) in pets {
        let body = json!({"name": name, "species": species, "age": age, "vaccinated": vaccinated, "owner": "ana"});
        let (status, _, created) =
            call(&stack, Method::POST, "/api/v1/pets", Some(body), &[("authorization", &auth)])
                .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let (_, _, dogs) =
        call(&stack, Method::GET, "/api/v1/pets?species=Dog&vaccinated=true", None, &[]).await;
    assert_eq!(names(&dogs), ["Rex", "Max"]);
    let (_, _, some) =
        call(&stack, Method::GET, "/api/v1/pets?species=Fish&species=Cat&sort=name", None, &[])
            .await;
    assert_eq!(names(&some), ["Luna", "Nemo", "Tom"]);
    let (_, _, three) = call(&stack, Method::GET, "/api/v1/pets?age=3&sort=-name", None, &[]).await;
    assert_eq!(names(&three), ["Rex", "Luna", "Fido"]);

    // Oldest first, ties in creation order, two per page.
    let mut seen = Vec::new();
    let mut path = "/api/v1/pets?sort=-age&limit=2".to_owned();
    loop {
        let (status, _, page) = call(&stack, Method::GET, &path, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(names(&page));
        match page["next"].as_str() {
            Some(cursor) => path = format!("/api/v1/pets?sort=-age&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["Max", "Tom", "Rex", "Fido", "Luna", "Nemo"]);

    for bad in [
        "/api/v1/pets?age=old",
        "/api/v1/pets?colour=red",
        "/api/v1/pets?sort=colour",
        "/api/v1/pets?limit=5000",
    ] {
        let (status, _, error) = call(&stack, Method::GET, bad, None, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_fields_are_managed_and_tasks_are_enqueued_with_the_change() {
    let stack = Stack::start().await;
    let auth = format!("Bearer {}", stack.token("ana").await);
    let auth = [("authorization", auth.as_str())];
    // `enrichment` is readOnly in the pets schema: a client cannot set it.
    let body = json!({"name": "Rex", "species": "Dog", "age": 3, "enrichment": {"fake": true}});
    let (status, _, pet) = call(&stack, Method::POST, "/api/v1/pets", Some(body), &auth).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(pet.get("enrichment"), None);
    let (status, _, error) = call(
        &stack,
        Method::POST,
        "/api/v1/pets",
        Some(json!({"id": "x", "name": "A", "species": "Cat", "age": 1})),
        &auth,
    )
    .await;
    assert_eq!(
        (status, error["error"]["fields"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id"))
    );

    // The create and an update each enqueued a pets.enrich task (no worker runs in this test).
    let path = format!("/api/v1/pets/{}", pet["id"].as_str().unwrap());
    let (status, _, _) =
        call(&stack, Method::PATCH, &path, Some(json!({"vaccinated": true})), &auth).await;
    assert_eq!(status, StatusCode::OK);
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    wait_for("TASKS to hold 2 tasks", Duration::from_secs(10), || async {
        let mut stream = js.get_stream(TASKS_STREAM).await.map_err(|err| err.to_string())?;
        let messages = stream.info().await.map_err(|err| err.to_string())?.state.messages;
        if messages == 2 { Ok(()) } else { Err(format!("{messages} tasks")) }
    })
    .await;
    let stream = js.get_stream(TASKS_STREAM).await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "tasks.normal.pets.enrich");
    let task: courier_core::Task = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        (task.collection.as_str(), task.doc_id.as_str(), task.doc_version),
        ("pets", pet["id"].as_str().unwrap(), 1)
    );
    // The create also scheduled the shipped rule's low-priority re-check, a week ahead.
    // (The queue endpoints are for admins.)
    let admin = format!("Bearer {}", stack.admin_token().await);
    let (status, _, queues) =
        call(&stack, Method::GET, "/api/v1/queues", None, &[("authorization", &admin)]).await;
    assert_eq!(status, StatusCode::OK);
    let scheduled = &queues["queues"][0]["scheduled"];
    assert_eq!(scheduled["count"], 1, "{queues}");
    let due = mongodb::bson::DateTime::parse_rfc3339_str(scheduled["next_due"].as_str().unwrap())
        .unwrap();
    let days_ahead =
        (due.timestamp_millis() - mongodb::bson::DateTime::now().timestamp_millis()) / 86_400_000;
    assert_eq!(days_ahead, 6, "due in a week (less the seconds since the create)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_the_docs_page_describe_every_collection() {
    let stack = Stack::start().await;
    let (status, _, doc) = call(&stack, Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/v1/products", "/api/v1/desks/{id}", "/api/v1/pets"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let page = stack.http.get(format!("{}/docs", stack.api.url())).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("/openapi.json"));
}
