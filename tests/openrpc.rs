//! The OpenRPC document: served at `GET /openrpc.json` and by `rpc.discover`, complete, and
//! true of what the hub really sends. Every method's real replies are validated against its
//! result schema, every kind of notification against its params, every error against the
//! method's listed codes, and the params schemas accept and refuse what the hub does.
//!
//! Validation is strict: an object the hub sends with a field the document does not name
//! fails, so the document cannot fall behind the types.

mod common;

use std::time::Duration;

use common::{RedisServer, TestHub, WsClient, eventually, http, rpc_call, without_rate_limits};
use jsonschema::Validator;
use quorum_hub::auth::Authority;
use serde_json::{Value, json};

/// The document and validators built from it.
struct Contract {
    doc: Value,
}

impl Contract {
    async fn fetch(hub: &TestHub) -> Self {
        let (status, body) = http(hub.addr, "GET", "/openrpc.json", "").await.unwrap();
        assert_eq!(status, 200, "{body}");
        Self {
            doc: serde_json::from_str(&body).expect("the document is JSON"),
        }
    }

    fn method(&self, name: &str) -> &Value {
        self.doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the document"))
    }

    fn notification(&self, name: &str) -> &Value {
        self.doc["x-notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the document's notifications"))
    }

    /// A validator for `schema`, with the document's shared schemas reachable by `$ref`,
    /// and every object closed to fields the document does not name.
    fn validator(&self, schema: &Value) -> Validator {
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"].clone(),
            "allOf": [schema],
        });
        close_objects(&mut root);
        jsonschema::validator_for(&root).expect("the document's schemas compile")
    }

    fn result_validator(&self, method: &str) -> Validator {
        self.validator(&self.method(method)["result"]["schema"])
    }

    /// By-name params as one object schema, from the method's content descriptors.
    fn params_validator(&self, method: &str) -> Validator {
        self.validator(&object_of(&self.method(method)["params"]))
    }

    fn notification_validator(&self, name: &str) -> Validator {
        self.validator(&object_of(&self.notification(name)["params"]))
    }

    /// The error codes a method lists.
    fn error_codes(&self, method: &str) -> Vec<i64> {
        self.method(method)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let target = e["$ref"].as_str().expect("errors are references");
                self.doc.pointer(&target[1..]).unwrap()["code"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }
}

/// The object schema that a list of by-name content descriptors describes.
fn object_of(descriptors: &Value) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for d in descriptors.as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        properties.insert(name.to_owned(), d["schema"].clone());
        if d["required"] == true {
            required.push(name);
        }
    }
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

/// Sets `additionalProperties: false` on every object schema that names its properties and
/// says nothing about others.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if fields.contains_key("properties") && !fields.contains_key("additionalProperties") {
                fields.insert("additionalProperties".into(), false.into());
            }
            fields.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

#[track_caller]
fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} breaks the document: {errors:?}"
    );
}

/// Calls `method` and validates the reply against the document: a result against the
/// result schema, an error against the method's listed codes. Returns the reply.
async fn checked_call(contract: &Contract, c: &mut WsClient, method: &str, params: Value) -> Value {
    assert_valid(
        &contract.params_validator(method),
        &params,
        &format!("{method} params"),
    );
    let reply = c.call(method, params).await;
    match reply.get("error") {
        None => assert_valid(&contract.result_validator(method), &reply["result"], method),
        Some(error) => {
            let code = error["code"].as_i64().unwrap();
            assert!(
                contract.error_codes(method).contains(&code),
                "{method} answered {error}, whose code the document does not list for it"
            );
        }
    }
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_rpc_discover_returns_the_same() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let contract = Contract::fetch(&hub).await;
    assert_eq!(contract.doc["openrpc"], "1.3.2");
    let names: Vec<&str> = contract.doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = quorum_hub::protocol::method::ALL
        .into_iter()
        .filter(|m| *m != "rpc.discover")
        .collect();
    assert_eq!(names, expected);
    let mut c = hub.client().await;
    assert_eq!(c.result("rpc.discover", json!({})).await, contract.doc);
    assert_eq!(
        rpc_call(hub.addr, "rpc.discover", json!({})).await["result"],
        contract.doc
    );
    // The validator is not vacuous: a reply missing a field, with a field of the wrong
    // type, or with a field the document does not name, fails.
    let vote = contract.result_validator("system.quorum.vote");
    assert!(vote.is_valid(&json!({"voted": true, "quorumReached": false, "voteCount": 1})));
    for bad in [
        json!({"voted": true}),
        json!({"voted": "yes", "quorumReached": false}),
        json!({"voted": false, "quorumReached": false, "reason": "napping"}),
        json!({"voted": true, "quorumReached": false, "surprise": 1}),
    ] {
        assert!(!vote.is_valid(&bad), "{bad} passed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_methods_real_replies_and_errors_match_the_document() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let contract = Contract::fetch(&hub).await;
    let mut watcher = hub.client().await;
    let subscribed = checked_call(
        &contract,
        &mut watcher,
        "system.subscribe",
        json!({"events": ["quorum.*", "instance.*"]}),
    )
    .await;
    assert_eq!(
        subscribed["result"]["subscribed"],
        json!(["quorum.*", "instance.*"])
    );

    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let registered = checked_call(
        &contract,
        &mut a,
        "system.register",
        json!({"instanceId": "a", "roles": ["leader"], "metadata": {"zone": "eu"}}),
    )
    .await;
    assert_eq!(registered["result"]["instanceId"], "a");
    checked_call(
        &contract,
        &mut b,
        "system.register",
        json!({"instanceId": "b"}),
    )
    .await;
    let mut c = hub.client().await;
    checked_call(
        &contract,
        &mut c,
        "system.register",
        json!({"instanceId": "c"}),
    )
    .await;
    let alive = checked_call(
        &contract,
        &mut a,
        "system.heartbeat",
        json!({"instanceId": "a"}),
    )
    .await;
    assert_eq!(alive["result"]["alive"], true);

    // Every outcome of a vote.
    let vote = |instance: &str, decision: &str, value: &str| json!({"instanceId": instance, "decision": decision, "value": value, "totalInstances": 2});
    let mut outcomes = Vec::new();
    for (voter, params) in [
        ("a", vote("a", "d1", "yes")),
        ("a", vote("a", "d1", "no")),
        ("b", vote("b", "d1", "yes")),
        ("b", vote("b", "d1", "yes")),
        ("c", vote("c", "d1", "no")),
    ] {
        let client = match voter {
            "a" => &mut a,
            "b" => &mut b,
            _ => &mut c,
        };
        let reply = checked_call(&contract, client, "system.quorum.vote", params).await;
        let result = &reply["result"];
        outcomes.push(
            match (result["voted"].as_bool(), result["reason"].as_str()) {
                (Some(false), Some(reason)) => reason.to_owned(),
                (Some(true), None) if result["quorumReached"] == true => "decided_now".to_owned(),
                (Some(true), None) => "recorded".to_owned(),
                _ => panic!("unexpected vote reply {reply}"),
            },
        );
    }
    assert_eq!(
        outcomes,
        [
            "recorded",
            "already_voted",
            "decided_now",
            "already_voted",
            "decided"
        ]
    );
    let late = checked_call(
        &contract,
        &mut b,
        "system.quorum.vote",
        vote("b", "d1", "no"),
    )
    .await;
    assert_eq!(late["result"]["reason"], "already_voted");
    // A decision that expires, and a vote that finds it so.
    let short = json!({"instanceId": "a", "decision": "d2", "value": "x", "totalInstances": 2, "closeAfterMs": 100});
    checked_call(&contract, &mut a, "system.quorum.vote", short).await;
    let expired = eventually("d2 to expire", async || {
        let reply = checked_call(
            &contract,
            &mut b,
            "system.quorum.status",
            json!({"decision": "d2"}),
        )
        .await;
        (reply["result"]["state"] == "expired").then_some(reply)
    })
    .await;
    assert_eq!(expired["result"]["tally"], json!({"x": 1}));
    let refused = checked_call(
        &contract,
        &mut b,
        "system.quorum.vote",
        vote("b", "d2", "x"),
    )
    .await;
    assert_eq!(refused["result"]["reason"], "expired");
    let decided = checked_call(
        &contract,
        &mut a,
        "system.quorum.status",
        json!({"decision": "d1"}),
    )
    .await;
    assert_eq!(decided["result"]["finalDecision"], "yes");

    // Both pages of get_state, through their cursors.
    let first = checked_call(&contract, &mut a, "system.get_state", json!({"limit": 1})).await;
    let page = &first["result"];
    assert_eq!(page["instances"].as_array().unwrap().len(), 1);
    let next = checked_call(
        &contract,
        &mut a,
        "system.get_state",
        json!({"limit": 1, "instancesAfter": page["nextInstances"], "decisionsAfter": page["nextDecisions"]}),
    )
    .await;
    assert_eq!(next["result"]["instances"][0]["instanceId"], "b");

    let gone = checked_call(
        &contract,
        &mut b,
        "system.unregister",
        json!({"instanceId": "b"}),
    )
    .await;
    assert_eq!(gone["result"]["unregistered"], true);

    // Errors each method lists: bad params, an unknown decision, acting as another instance.
    for (method, params, code) in [
        (
            "system.quorum.vote",
            json!({"instanceId": "a", "decision": "d 3", "value": "v"}),
            -32602,
        ),
        (
            "system.quorum.status",
            json!({"decision": "nowhere"}),
            -32004,
        ),
        ("system.quorum.vote", vote("b", "d3", "v"), -32002),
        (
            "system.heartbeat",
            json!({"instanceId": "a", "extra": 1}),
            -32602,
        ),
        ("system.get_state", json!({"limit": 0}), -32602),
    ] {
        let reply = a.call(method, params).await;
        assert_eq!(reply["error"]["code"], code, "{method}: {reply}");
        assert!(
            contract.error_codes(method).contains(&code),
            "{method} does not list {code}"
        );
    }

    // Every notification the watcher got matches the document, and each kind came.
    let mut kinds: Vec<String> = Vec::new();
    eventually("the watcher to have every kind of event", async || {
        let value = tokio::time::timeout(Duration::from_millis(50), watcher.recv_value()).await;
        if let Ok(value) = value {
            watcher.notifications.push(value);
        }
        kinds = watcher
            .notifications
            .iter()
            .map(|n| n["method"].as_str().unwrap().to_owned())
            .collect();
        [
            "quorum.decision.made",
            "quorum.decision.expired",
            "quorum.vote.recorded",
            "instance.registered",
            "instance.unregistered",
        ]
        .iter()
        .all(|k| kinds.iter().any(|seen| seen == k))
        .then_some(())
    })
    .await;
    for n in &watcher.notifications {
        let name = n["method"].as_str().unwrap();
        assert_valid(&contract.notification_validator(name), &n["params"], name);
    }

    // A fresh session's replay from the decision made: the expiry after it, then an
    // unsubscribe.
    let mut fresh = hub.client().await;
    let made = watcher
        .notifications
        .iter()
        .find(|n| n["method"] == "quorum.decision.made")
        .unwrap()["params"]["eventId"]
        .clone();
    let replay = checked_call(
        &contract,
        &mut fresh,
        "system.subscribe",
        json!({ "since": made }),
    )
    .await;
    assert_eq!(replay["result"]["replayed"], 1, "{replay}");
    let expiry = fresh.next_notification().await;
    assert_eq!(expiry["method"], "quorum.decision.expired", "{expiry}");
    checked_call(&contract, &mut fresh, "system.unsubscribe", json!({})).await;

    // A resume from a cursor that is not an event id gets the notice, as documented.
    let mut resumed = WsClient::connect(&format!("{}?lastEventId=nonsense", hub.ws_url())).await;
    let notice = resumed.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete");
    assert_eq!(notice["params"]["reason"], "malformed");
    assert_valid(
        &contract.notification_validator("system.events.incomplete"),
        &notice["params"],
        "system.events.incomplete",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refresh_replies_match_the_document() {
    const SECRET: &str = "openrpc-test-secret-0123456789ab";
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.auth_secret = Some(SECRET.to_owned());
    let hub = TestHub::start_with(config).await;
    let contract = Contract::fetch(&hub).await;
    let authority = Authority::new(SECRET).unwrap();
    let token = |ttl| {
        authority
            .mint(Some("a"), false, Duration::from_secs(ttl))
            .unwrap()
    };
    let mut a = WsClient::connect(&format!("{}?token={}", hub.ws_url(), token(60))).await;
    checked_call(
        &contract,
        &mut a,
        "system.register",
        json!({"instanceId": "a"}),
    )
    .await;
    let refreshed = checked_call(
        &contract,
        &mut a,
        "system.auth.refresh",
        json!({"token": token(600)}),
    )
    .await;
    assert!(
        refreshed["result"]["expiresAt"].as_u64().unwrap() > 0,
        "{refreshed}"
    );
    let other = authority
        .mint(Some("b"), false, Duration::from_secs(600))
        .unwrap();
    let refused = checked_call(
        &contract,
        &mut a,
        "system.auth.refresh",
        json!({"token": other}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_replies_match_the_document() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.webhooks.allow_private = true;
    let hub = TestHub::start_with(config).await;
    let contract = Contract::fetch(&hub).await;
    let receiver = common::receiver::Receiver::ok().await;
    let mut admin = hub.client().await;
    let added = checked_call(
        &contract,
        &mut admin,
        "system.webhooks.add",
        json!({"url": receiver.url(), "description": "ci", "events": ["quorum.decision.made"]}),
    )
    .await;
    let id = added["result"]["id"].as_str().unwrap().to_owned();
    let mut voter = hub.client_as("v").await;
    voter.decide("v", "d").await;
    receiver.wait_for(1).await;
    let listed = common::eventually("the attempt to be listed", async || {
        let listed = checked_call(&contract, &mut admin, "system.webhooks.list", json!({})).await;
        listed["result"]["webhooks"][0]["lastAttempt"]
            .is_object()
            .then_some(listed)
    })
    .await;
    assert_eq!(listed["result"]["webhooks"][0]["id"], id.as_str());
    let page = checked_call(
        &contract,
        &mut admin,
        "system.webhooks.deliveries",
        json!({"id": id, "limit": 1}),
    )
    .await;
    assert_eq!(
        page["result"]["attempts"][0]["outcome"], "delivered",
        "{page}"
    );
    for method in [
        "system.webhooks.rotate",
        "system.webhooks.enable",
        "system.webhooks.remove",
        "system.webhooks.remove",
    ] {
        checked_call(&contract, &mut admin, method, json!({"id": id})).await;
    }
    // The document and the hub refuse the same URL.
    let ftp = json!({"url": "ftp://example.com/"});
    assert!(
        !contract
            .params_validator("system.webhooks.add")
            .is_valid(&ftp)
    );
    let refused = admin.call("system.webhooks.add", ftp).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
}

/// The params schemas accept what the hub accepts and refuse what it refuses, at each limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_schemas_draw_the_hubs_limits() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let contract = Contract::fetch(&hub).await;
    let mut c = hub.client().await;
    c.register("voter").await;
    let mut n = 0;
    let mut vote = |field: &str, value: Value| {
        n += 1;
        let mut params = json!({"instanceId": "voter", "decision": format!("p{n}"), "value": "v"});
        params[field] = value;
        params
    };
    let name = |len: usize| "x".repeat(len);
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "system.quorum.vote",
            vote("decision", name(200).into()),
            true,
        ),
        (
            "system.quorum.vote",
            vote("decision", name(201).into()),
            false,
        ),
        ("system.quorum.vote", vote("decision", "a b".into()), false),
        (
            "system.quorum.vote",
            vote("decision", "a\u{a0}b".into()),
            false,
        ),
        ("system.quorum.vote", vote("decision", "a{b".into()), false),
        (
            "system.quorum.vote",
            vote("decision", "ünï:cødé/1".into()),
            true,
        ),
        ("system.quorum.vote", vote("value", name(256).into()), true),
        ("system.quorum.vote", vote("value", name(257).into()), false),
        (
            "system.quorum.vote",
            vote("value", "with spaces".into()),
            true,
        ),
        (
            "system.quorum.vote",
            vote("value", "bell\u{7}".into()),
            false,
        ),
        ("system.quorum.vote", vote("value", "".into()), false),
        (
            "system.quorum.vote",
            vote("totalInstances", 10_000.into()),
            true,
        ),
        (
            "system.quorum.vote",
            vote("totalInstances", 10_001.into()),
            false,
        ),
        (
            "system.quorum.vote",
            vote("totalInstances", 0.into()),
            false,
        ),
        (
            "system.quorum.vote",
            vote("totalInstances", "3".into()),
            false,
        ),
        ("system.quorum.vote", vote("closeAfterMs", 100.into()), true),
        ("system.quorum.vote", vote("closeAfterMs", 99.into()), false),
        (
            "system.quorum.vote",
            vote("closeAfterMs", 604_800_000.into()),
            true,
        ),
        (
            "system.quorum.vote",
            vote("closeAfterMs", 604_800_001.into()),
            false,
        ),
        ("system.quorum.vote", vote("extra", 1.into()), false),
        (
            "system.register",
            json!({"instanceId": "voter", "roles": vec!["r"; 32]}),
            true,
        ),
        (
            "system.register",
            json!({"instanceId": "voter", "roles": vec!["r"; 33]}),
            false,
        ),
        (
            "system.register",
            json!({"instanceId": "voter", "roles": [name(64)]}),
            true,
        ),
        (
            "system.register",
            json!({"instanceId": "voter", "roles": [name(65)]}),
            false,
        ),
        (
            "system.register",
            json!({"instanceId": "voter", "roles": ["a b"]}),
            false,
        ),
        ("system.heartbeat", json!({"instanceId": name(129)}), false),
        ("system.heartbeat", json!({}), false),
        ("system.quorum.status", json!({"decision": "p7"}), true),
        ("system.get_state", json!({"limit": 1000}), true),
        ("system.get_state", json!({"limit": 1001}), false),
        ("system.get_state", json!({"decisionsAfter": "17:p1"}), true),
        ("system.get_state", json!({"decisionsAfter": "p1"}), false),
        (
            "system.subscribe",
            json!({"events": ["quorum.*"], "since": "1-0"}),
            true,
        ),
        ("system.subscribe", json!({"since": "one"}), false),
        ("system.unsubscribe", json!({"events": ["quorum.*"]}), true),
        ("system.unsubscribe", json!({"since": "1-0"}), false),
        ("system.auth.refresh", json!({"token": ""}), false),
        ("rpc.discover", json!({"x": 1}), false),
    ];
    for (method, params, accepted) in cases {
        if method != "rpc.discover" {
            let schema = contract.params_validator(method);
            assert_eq!(
                schema.is_valid(&params),
                accepted,
                "the document on {method} {params}"
            );
        }
        let reply = c.call(method, params.clone()).await;
        let hub_accepted = reply.get("error").is_none();
        assert_eq!(
            hub_accepted, accepted,
            "the hub on {method} {params}: {reply}"
        );
        if !accepted {
            assert_eq!(reply["error"]["code"], -32602, "{method} {params}: {reply}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_replies_match_the_document() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let contract = Contract::fetch(&hub).await;
    let mut client = hub.client().await;
    let browser = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let endpoint = "https://push.example/browser";
    let subscription = json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {
            "p256dh": URL_SAFE_NO_PAD.encode(browser.public_key().to_encoded_point(false).as_bytes()),
            "auth": URL_SAFE_NO_PAD.encode([1u8; 16]),
        }
    });
    let subscribed = checked_call(
        &contract,
        &mut client,
        "system.push.subscribe",
        json!({"subscription": subscription, "events": ["quorum.decision.*"]}),
    )
    .await;
    assert_eq!(subscribed["result"]["done"], "subscribed", "{subscribed}");
    let listed = checked_call(&contract, &mut client, "system.push.list", json!({})).await;
    assert_eq!(
        listed["result"]["subscriptions"][0]["pushService"], "https://push.example",
        "{listed}"
    );
    for done in ["removed", "absent"] {
        let reply = checked_call(
            &contract,
            &mut client,
            "system.push.unsubscribe",
            json!({ "endpoint": endpoint }),
        )
        .await;
        assert_eq!(reply["result"]["done"], done, "{reply}");
    }
    // The document and the hub refuse the same endpoint.
    let ftp = json!({"subscription": {"endpoint": "ftp://push.example/", "keys": {"p256dh": "a", "auth": "b"}}});
    assert!(
        !contract
            .params_validator("system.push.subscribe")
            .is_valid(&ftp)
    );
    let refused = client.call("system.push.subscribe", ftp).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_replies_match_the_document() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let contract = Contract::fetch(&hub).await;
    let mut admin = hub.client().await;
    let policy = json!({
        "electorate": {"role": "deployer"},
        "threshold": "two_thirds",
        "closeAfterMs": 60_000,
        "values": ["approve", "deny"],
        "openers": "deployer"
    });
    let set = json!({"pattern": "deploy-*", "policy": policy});
    checked_call(&contract, &mut admin, "system.policies.set", set).await;
    let listed = checked_call(&contract, &mut admin, "system.policies.list", json!({})).await;
    assert_eq!(
        listed["result"]["policies"][0]["policy"], policy,
        "{listed}"
    );
    let mut voter = hub.client().await;
    let roles = json!({"instanceId": "d1", "roles": ["deployer"]});
    checked_call(&contract, &mut voter, "system.register", roles).await;
    let mut outsider = hub.client_as("o1").await;
    let ballot = |id: &str| json!({"instanceId": id, "decision": "deploy-1", "value": "approve"});
    let refused = checked_call(&contract, &mut outsider, "system.quorum.vote", ballot("o1")).await;
    assert_eq!(
        refused["error"]["data"]["reason"], "not_an_opener",
        "{refused}"
    );
    checked_call(&contract, &mut voter, "system.quorum.vote", ballot("d1")).await;
    let status = json!({"decision": "deploy-1"});
    let shown = checked_call(&contract, &mut voter, "system.quorum.status", status).await;
    assert_eq!(shown["result"]["policy"]["pattern"], "deploy-*", "{shown}");
    let state = checked_call(&contract, &mut voter, "system.get_state", json!({})).await;
    assert_eq!(
        state["result"]["decisions"][0]["threshold"], "two_thirds",
        "{state}"
    );
    let pattern = json!({"pattern": "deploy-*"});
    checked_call(
        &contract,
        &mut admin,
        "system.policies.remove",
        pattern.clone(),
    )
    .await;
    let gone = checked_call(&contract, &mut admin, "system.policies.remove", pattern).await;
    assert_eq!(gone["error"]["code"], -32004, "{gone}");
}
