//! Decision policies, each rule checked with two hubs on one keyspace: roles from tokens,
//! the electorate snapshot, thresholds, allowed values, openers, and a policy changed while
//! a decision is open. (Runs against a Redis Cluster too: `QUORUM_TEST_REDIS=cluster`.)

mod common;

use std::time::Duration;

use common::hub::bin_path;
use common::{RedisServer, TestHub, WsClient, assert_error, eventually, without_rate_limits};
use quorum_hub::auth::Authority;
use quorum_hub::client::{Client, ClientConfig, TokenSource};
use quorum_hub::policy::Policy;
use serde_json::{Value, json};

const SECRET: &str = "policies-test-secret-0123456789";

/// Two hubs on one Redis (a caller on loopback administers them).
async fn two_hubs(redis: &RedisServer) -> (TestHub, TestHub) {
    (
        TestHub::start_with(without_rate_limits(redis)).await,
        TestHub::start_with(without_rate_limits(redis)).await,
    )
}

/// Sets `policy` for `pattern` through `admin_hub`, and waits until `other` applies it.
async fn set_policy(admin_hub: &TestHub, other: &TestHub, pattern: &str, policy: Value) {
    let mut admin = admin_hub.client().await;
    let done = admin
        .result(
            "system.policies.set",
            json!({"pattern": pattern, "policy": policy}),
        )
        .await;
    assert_eq!(done, json!({"pattern": pattern, "done": "set"}));
    let applied = admin.result("system.policies.list", json!({})).await;
    let entry = applied["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["pattern"] == pattern)
        .cloned()
        .unwrap();
    for (field, value) in policy.as_object().unwrap() {
        assert_eq!(&entry["policy"][field], value, "{entry}");
    }
    let mut watcher = other.client().await;
    eventually(&format!("the other hub applies {pattern}"), async || {
        let list = watcher.result("system.policies.list", json!({})).await;
        (list == applied).then_some(())
    })
    .await;
}

/// A session registered as `id` with `roles`.
async fn member(hub: &TestHub, id: &str, roles: &[&str]) -> WsClient {
    let mut client = hub.client().await;
    client
        .result("system.register", json!({"instanceId": id, "roles": roles}))
        .await;
    client
}

/// `n` sessions registered as `{prefix}{i}` with `role`, on the two hubs in turn.
async fn electors(
    hubs: [&TestHub; 2],
    prefix: &str,
    n: usize,
    role: &str,
) -> Vec<(String, WsClient)> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        out.push((id.clone(), member(hubs[i % 2], &id, &[role]).await));
    }
    out
}

fn ballot(id: &str, decision: &str, value: &str) -> Value {
    json!({"instanceId": id, "decision": decision, "value": value})
}

async fn vote(client: &mut WsClient, id: &str, decision: &str, value: &str) -> Value {
    client
        .result("system.quorum.vote", ballot(id, decision, value))
        .await
}

async fn refused(client: &mut WsClient, id: &str, decision: &str, value: &str) -> Value {
    client
        .error("system.quorum.vote", ballot(id, decision, value))
        .await
}

async fn status(client: &mut WsClient, decision: &str) -> Value {
    client
        .result("system.quorum.status", json!({"decision": decision}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_role_cannot_register_with_it() {
    let redis = RedisServer::start();
    let secured = || {
        let mut config = without_rate_limits(&redis);
        config.auth_secret = Some(SECRET.to_owned());
        config
    };
    let (a, b) = (
        TestHub::start_with(secured()).await,
        TestHub::start_with(secured()).await,
    );
    let authority = Authority::new(SECRET).unwrap();
    let ttl = Duration::from_secs(600);
    let roles = ["deployer".to_owned()];
    let with_role = authority
        .mint_with_roles(Some("d1"), false, &roles, ttl)
        .unwrap();
    let without = authority.mint(Some("d2"), false, ttl).unwrap();
    let connect = async |hub: &TestHub, token: &str| {
        let bearer = format!("Bearer {token}");
        WsClient::connect_with(&hub.ws_url(), &[("authorization", &bearer)])
            .await
            .unwrap()
    };

    let mut d2 = connect(&b, &without).await;
    let error = d2
        .error(
            "system.register",
            json!({"instanceId": "d2", "roles": ["deployer"]}),
        )
        .await;
    assert_error(&error, -32002, "does not grant role deployer");
    assert_eq!(error["data"]["reason"], "role_not_granted", "{error}");
    // Without roles it registers as before.
    d2.result("system.register", json!({"instanceId": "d2"}))
        .await;

    let mut d1 = connect(&a, &with_role).await;
    let error = d1
        .error(
            "system.register",
            json!({"instanceId": "d1", "roles": ["deployer", "admin-ish"]}),
        )
        .await;
    assert_error(&error, -32002, "does not grant role admin-ish");
    d1.result(
        "system.register",
        json!({"instanceId": "d1", "roles": ["deployer"]}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_outside_the_electorate_is_refused_and_not_counted() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(
        &a,
        &b,
        "deploy-*",
        json!({"electorate": {"role": "deployer"}}),
    )
    .await;
    let mut d1 = member(&a, "d1", &["deployer"]).await;
    let mut d2 = member(&b, "d2", &["deployer", "watcher"]).await;
    let _d3 = member(&a, "d3", &["deployer"]).await;
    let mut outsider = member(&b, "o1", &["watcher"]).await;

    // Refused before the decision opens: it is not opened by an outsider.
    let error = refused(&mut outsider, "o1", "deploy-web", "yes").await;
    assert_error(&error, -32002, "not in the electorate");
    assert_eq!(error["data"]["reason"], "not_in_electorate", "{error}");
    let error = d1
        .error("system.quorum.status", json!({"decision": "deploy-web"}))
        .await;
    assert_eq!(error["code"], -32004, "nothing was opened: {error}");

    // totalInstances is the electorate's size; another stated value is refused.
    let mut wrong = ballot("d1", "deploy-web", "yes");
    wrong["totalInstances"] = json!(1);
    let error = d1.error("system.quorum.vote", wrong).await;
    assert_error(&error, -32602, "electorate's 3 instances");
    assert_eq!(error["data"]["field"], "totalInstances", "{error}");

    let reply = vote(&mut d1, "d1", "deploy-web", "yes").await;
    assert_eq!(reply["voteCount"], 1, "{reply}");
    assert_eq!(reply["quorumReached"], false, "{reply}");
    let error = refused(&mut outsider, "o1", "deploy-web", "no").await;
    assert_eq!(error["data"]["reason"], "not_in_electorate", "{error}");

    let shown = status(&mut outsider, "deploy-web").await;
    assert_eq!(
        shown["voteCount"], 1,
        "the outsider is not counted: {shown}"
    );
    assert_eq!(shown["totalInstances"], 3, "{shown}");
    assert_eq!(shown["quorum"], 2, "{shown}");
    assert_eq!(
        shown["policy"],
        json!({
            "pattern": "deploy-*",
            "threshold": "majority",
            "electorate": {"role": "deployer", "members": ["d1", "d2", "d3"]}
        })
    );

    let reply = vote(&mut d2, "d2", "deploy-web", "yes").await;
    assert_eq!(reply["quorumReached"], true, "{reply}");
    assert_eq!(reply["voteCount"], 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_electorate_is_the_snapshot_taken_when_the_decision_opens() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(
        &a,
        &b,
        "release-*",
        json!({"electorate": {"role": "releaser"}, "threshold": "two_thirds"}),
    )
    .await;
    let mut r1 = member(&a, "r1", &["releaser"]).await;
    let mut r2 = member(&b, "r2", &["releaser"]).await;
    let _r3 = member(&a, "r3", &["releaser"]).await;
    let mut r4 = member(&b, "r4", &["releaser"]).await;

    vote(&mut r1, "r1", "release-7", "ship").await;
    // r4 votes, then leaves: its vote and its place in the electorate stay.
    vote(&mut r4, "r4", "release-7", "ship").await;
    r4.result("system.unregister", json!({"instanceId": "r4"}))
        .await;
    // An instance that takes the role after the opening is not in the electorate.
    let mut late = member(&b, "r5", &["releaser"]).await;
    let error = refused(&mut late, "r5", "release-7", "ship").await;
    assert_eq!(error["data"]["reason"], "not_in_electorate", "{error}");

    let shown = status(&mut r1, "release-7").await;
    assert_eq!(shown["totalInstances"], 4, "{shown}");
    assert_eq!(shown["quorum"], 3, "ceil(2*4/3): {shown}");
    assert_eq!(
        shown["policy"]["electorate"]["members"],
        json!(["r1", "r2", "r3", "r4"])
    );
    assert_eq!(shown["voteCount"], 2, "{shown}");

    let reply = vote(&mut r2, "r2", "release-7", "ship").await;
    assert_eq!(reply["quorumReached"], true, "{reply}");
    assert_eq!(reply["voteCount"], 3, "r4's vote counts: {reply}");

    // A decision opened now draws its electorate from the members registered now.
    vote(&mut late, "r5", "release-8", "ship").await;
    let shown = status(&mut late, "release-8").await;
    assert_eq!(
        shown["policy"]["electorate"]["members"],
        json!(["r1", "r2", "r3", "r5"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thirds_and_unanimous_decide_at_the_right_vote() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(
        &a,
        &b,
        "tt-*",
        json!({"electorate": {"role": "five"}, "threshold": "two_thirds"}),
    )
    .await;
    set_policy(
        &b,
        &a,
        "un-*",
        json!({"electorate": {"role": "three"}, "threshold": "unanimous"}),
    )
    .await;
    let mut five = electors([&a, &b], "s", 5, "five").await;
    // ceil(2*5/3) = 4 (a majority would be 3). Rule 5's tie-break: at the fourth vote "b"
    // and "a" both have two; "b" got its second first, so "b" wins.
    let values = ["a", "b", "b", "a"];
    for (n, ((id, client), value)) in five.iter_mut().zip(values).enumerate() {
        let reply = vote(client, id, "tt-1", value).await;
        assert_eq!(reply["voteCount"], n + 1, "{reply}");
        let at_quorum = n + 1 == 4;
        assert_eq!(reply["quorumReached"], at_quorum, "vote {}: {reply}", n + 1);
        if at_quorum {
            assert_eq!(reply["finalDecision"], "b", "{reply}");
        }
    }

    let mut three = electors([&b, &a], "u", 3, "three").await;
    for (n, (id, client)) in three.iter_mut().enumerate() {
        let reply = vote(client, id, "un-1", "go").await;
        assert_eq!(reply["quorumReached"], n == 2, "vote {}: {reply}", n + 1);
    }
    let shown = status(&mut three[0].1, "un-1").await;
    assert_eq!(shown["quorum"], 3, "{shown}");
    assert_eq!(shown["policy"]["threshold"], "unanimous", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_while_a_decision_is_open_does_not_affect_it() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(&a, &b, "ch-*", json!({"electorate": {"role": "voter"}})).await;
    let mut v1 = member(&a, "v1", &["voter"]).await;
    let mut v2 = member(&b, "v2", &["voter"]).await;
    let mut v3 = member(&b, "v3", &["voter"]).await;
    vote(&mut v1, "v1", "ch-open", "y").await;

    set_policy(
        &a,
        &b,
        "ch-*",
        json!({"electorate": {"role": "voter"}, "threshold": "unanimous", "values": ["x"]}),
    )
    .await;
    // The open decision keeps majority and takes any value.
    let reply = vote(&mut v2, "v2", "ch-open", "y").await;
    assert_eq!(reply["quorumReached"], true, "{reply}");
    assert_eq!(reply["finalDecision"], "y", "{reply}");

    // A decision opened now is under the new terms.
    let error = refused(&mut v3, "v3", "ch-new", "y").await;
    assert_eq!(error["code"], -32602, "{error}");
    vote(&mut v3, "v3", "ch-new", "x").await;
    let reply = vote(&mut v1, "v1", "ch-new", "x").await;
    assert_eq!(reply["quorumReached"], false, "unanimous: {reply}");
    let shown = status(&mut v1, "ch-new").await;
    assert_eq!(shown["policy"]["values"], json!(["x"]), "{shown}");

    // Removing the policy leaves the open decision under its terms too.
    let mut admin = b.client().await;
    admin
        .result("system.policies.remove", json!({"pattern": "ch-*"}))
        .await;
    let mut watcher = a.client().await;
    eventually("hub a drops the policy", async || {
        let list = watcher.result("system.policies.list", json!({})).await;
        list["policies"].as_array()?.is_empty().then_some(())
    })
    .await;
    let error = refused(&mut v2, "v2", "ch-new", "y").await;
    assert_eq!(error["data"]["field"], "value", "{error}");
    let reply = vote(&mut v2, "v2", "ch-new", "x").await;
    assert_eq!(reply["quorumReached"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_value_is_refused_and_only_openers_open() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(
        &a,
        &b,
        "change-42",
        json!({"values": ["approve", "deny"], "openers": "lead", "threshold": 2}),
    )
    .await;
    let mut lead = member(&b, "lead-1", &["lead"]).await;
    let mut other = member(&a, "w1", &["worker"]).await;

    let error = refused(&mut other, "w1", "change-42", "approve").await;
    assert_error(&error, -32002, "only instances registered with role lead");
    assert_eq!(error["data"]["reason"], "not_an_opener", "{error}");

    let error = refused(&mut lead, "lead-1", "change-42", "maybe").await;
    assert_error(&error, -32602, "does not allow value");
    assert_eq!(error["data"]["field"], "value", "{error}");
    let reply = vote(&mut lead, "lead-1", "change-42", "approve").await;
    assert_eq!(reply["voteCount"], 1, "{reply}");

    // Once open, anyone registered votes (no electorate), within the values.
    let error = refused(&mut other, "w1", "change-42", "maybe").await;
    assert_eq!(error["code"], -32602, "{error}");
    let reply = vote(&mut other, "w1", "change-42", "deny").await;
    assert_eq!(reply["quorumReached"], true, "a count of 2: {reply}");
    let shown = status(&mut other, "change-42").await;
    assert_eq!(shown["quorum"], 2, "{shown}");
    assert_eq!(shown["policy"]["openers"], "lead", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_no_policy_matches_behaves_as_before() {
    let redis = RedisServer::start();
    let (a, b) = two_hubs(&redis).await;
    set_policy(&a, &b, "gated-*", json!({"electorate": {"role": "nobody"}})).await;
    let mut alone = member(&b, "solo", &[]).await;
    let mut params = ballot("solo", "ungated", "anything");
    params["totalInstances"] = json!(1);
    let reply = alone.result("system.quorum.vote", params).await;
    assert_eq!(
        reply,
        json!({"voted": true, "quorumReached": true, "finalDecision": "anything", "voteCount": 1})
    );
    let shown = status(&mut alone, "ungated").await;
    assert!(shown.get("policy").is_none(), "{shown}");
    let error = refused(&mut alone, "solo", "gated-1", "x").await;
    assert_eq!(error["data"]["reason"], "not_in_electorate", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_mints_roles_and_votes_with_them() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.auth_secret = Some(SECRET.to_owned());
    let hub = TestHub::start_with(config).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(bin_path())
            .args(args)
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let (minted, admin, _) = run(&["token", "--admin", "--auth-secret", SECRET]);
    assert!(minted);
    let (minted, token, _) = run(&[
        "token",
        "--sub",
        "cli-d",
        "--role",
        "deployer",
        "--auth-secret",
        SECRET,
    ]);
    assert!(minted);
    // The Rust client, with an admin token, sets the policy.
    let mut config = ClientConfig::new(hub.ws_url());
    config.token = Some(TokenSource::Static(admin));
    let (admin, _events) = Client::connect(config).await.unwrap();
    let policy: Policy = serde_json::from_value(
        json!({"electorate": {"role": "deployer"}, "threshold": "unanimous"}),
    )
    .unwrap();
    let set = admin.set_policy("cli-*", &policy).await.unwrap();
    assert_eq!(set.done, "set");
    let listed = admin.policies().await.unwrap();
    assert_eq!(listed.policies[0].policy, policy);
    let url = hub.ws_url();
    let vote = |decision: &str, role: Option<&str>| {
        let mut args = vec![
            "vote",
            "--url",
            &url,
            "--token",
            &token,
            "--instance",
            "cli-d",
        ];
        args.extend(["--decision", decision, "--value", "ship"]);
        args.extend(role.iter().flat_map(|role| ["--role", role]));
        run(&args)
    };
    // Registered without the role, it is outside the electorate.
    let (ok, _, refused) = vote("cli-1", None);
    assert!(!ok && refused.contains("not_in_electorate"), "{refused}");
    let (ok, reply, _) = vote("cli-2", Some("deployer"));
    assert!(ok, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["quorumReached"], true, "the only elector: {reply}");
    // A role the token does not grant is refused at registration.
    assert_eq!(admin.remove_policy("cli-*").await.unwrap().done, "removed");
    let (ok, _, refused) = vote("cli-3", Some("admin-ish"));
    assert!(
        !ok && refused.contains("does not grant role admin-ish"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_reaches_every_hub_and_require_policy_refuses_the_rest() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.json");
    let policies = json!({"ops-*": {"threshold": "unanimous", "values": ["go", "stop"]}});
    std::fs::write(&file, policies.to_string()).unwrap();
    let mut config = without_rate_limits(&redis);
    config.policy_file = Some(file);
    config.require_policy = true;
    let a = TestHub::start_with(config).await;
    let b = TestHub::start_with(without_rate_limits(&redis)).await;
    let mut watcher = b.client().await;
    eventually("hub b applies the file's policy", async || {
        let list = watcher.result("system.policies.list", json!({})).await;
        (list["policies"][0]["pattern"] == "ops-*").then_some(())
    })
    .await;
    let mut voter = member(&b, "op-1", &[]).await;
    let mut params = ballot("op-1", "ops-1", "go");
    params["totalInstances"] = json!(2);
    let reply = voter.result("system.quorum.vote", params).await;
    assert_eq!(reply["quorumReached"], false, "unanimous of 2: {reply}");

    // Hub a takes votes only on decisions a policy covers; hub b still takes the rest.
    let mut on_a = member(&a, "op-2", &[]).await;
    let error = refused(&mut on_a, "op-2", "adhoc", "go").await;
    assert_error(&error, -32002, "no policy matches decision adhoc");
    assert_eq!(error["data"]["reason"], "no_policy", "{error}");
    let reply = vote(&mut on_a, "op-2", "ops-1", "go").await;
    assert_eq!(reply["quorumReached"], true, "{reply}");
    vote(&mut voter, "op-1", "adhoc", "go").await;
}
