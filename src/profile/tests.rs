//! Table tests of profiles: every built-in reads, every field is checked by name, and each
//! dialect's documents decode as its documentation says.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use serde_json::json;

use super::*;
use crate::model::{JobFailure, JobState};

fn builtin(name: &str) -> Profile {
    Profile::builtin(name).unwrap()
}

fn decode(profile: &Profile, body: serde_json::Value) -> JobStatus {
    profile
        .decode(200, &serde_json::to_vec(&body).unwrap())
        .unwrap()
}

fn setting(result: Result<Profile, Error>) -> &'static str {
    match result {
        Err(Error::Config(c)) => c.setting,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn every_builtin_reads_and_round_trips() {
    assert_eq!(
        Profile::builtin_names(),
        [
            "simulator",
            "result",
            "heygen-v2",
            "heygen-v3",
            "replicate",
            "openai-video"
        ]
    );
    for name in Profile::builtin_names() {
        let profile = builtin(name);
        assert_eq!(profile.name(), name);
        let toml = profile.to_toml().unwrap();
        assert_eq!(Profile::from_toml_str(&toml).unwrap(), profile, "{toml}");
        let json = serde_json::to_string(&profile).unwrap();
        assert_eq!(Profile::from_json_str(&json).unwrap(), profile, "{json}");
    }
    assert_eq!(Profile::default(), builtin("simulator"));
    assert_eq!(setting(Profile::builtin("heygen-v4")), "profile");
    assert!(builtin("simulator").can_cancel() && builtin("replicate").can_cancel());
    assert!(!builtin("heygen-v2").can_cancel());
    assert!(builtin("heygen-v3").can_create() && !builtin("openai-video").can_create());
    assert_eq!(builtin("heygen-v2").api_key_env(), Some("HEYGEN_API_KEY"));
    assert_eq!(
        builtin("replicate").base_url(),
        Some("https://api.replicate.com/")
    );
}

#[test]
fn each_dialect_reads_as_documented() {
    let v2 = builtin("heygen-v2");
    let s = decode(
        &v2,
        json!({"error": null, "data": {"video_translate_id": "j-1", "title": "t",
            "status": "success", "url": "https://cdn/x.mp4?sig=1", "message": null}}),
    );
    assert_eq!(
        (s.state.clone(), s.raw_state.as_deref(), s.id.as_deref()),
        (JobState::Completed, Some("success"), Some("j-1"))
    );
    assert_eq!(s.result_url.as_deref(), Some("https://cdn/x.mp4?sig=1"));
    let s = decode(
        &v2,
        json!({"data": {"status": "failed", "message": "no audio"}}),
    );
    assert_eq!(
        s.state,
        JobState::Failed(JobFailure {
            code: None,
            message: Some("no audio".into())
        })
    );
    assert_eq!(
        decode(&v2, json!({"data": {"status": "pending"}})).state,
        JobState::Queued
    );

    let v3 = builtin("heygen-v3");
    let s = decode(
        &v3,
        json!({"data": {"id": "j-2", "status": "completed", "video_url": "https://v",
            "failure_message": null, "duration": 1.0, "created_at": 1_700_000_000,
            "completed_at": 1_700_000_012}}),
    );
    assert_eq!(s.state, JobState::Completed);
    assert_eq!(s.duration(), Some(Duration::from_secs(12)));
    assert_eq!(
        s.created_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );

    let replicate = builtin("replicate");
    let s = decode(
        &replicate,
        json!({"id": "p1", "status": "succeeded", "output": ["https://r/1.mp4", "https://r/2.mp4"]}),
    );
    assert_eq!(s.result_url.as_deref(), Some("https://r/1.mp4"));
    for (word, want) in [
        ("starting", JobState::Queued),
        ("processing", JobState::Pending { eta: None }),
        ("aborted", JobState::Canceled),
        ("canceled", JobState::Canceled),
    ] {
        assert_eq!(decode(&replicate, json!({"status": word})).state, want);
    }
    let s = decode(&replicate, json!({"status": "failed", "error": "OOM"}));
    assert_eq!(s.state.to_string(), "error (OOM)");

    let openai = builtin("openai-video");
    let s = decode(
        &openai,
        json!({"id": "video_1", "status": "in_progress", "progress": 40}),
    );
    assert_eq!(
        (s.state, s.progress),
        (JobState::Pending { eta: None }, Some(0.4))
    );
    // In percent, 1 is 1 %, not done.
    let s = decode(&openai, json!({"status": "in_progress", "progress": 1}));
    assert_eq!(s.progress, Some(0.01));

    let result = builtin("result");
    assert_eq!(
        decode(&result, json!({"result": "completed"})).state,
        JobState::Completed
    );
    assert!(matches!(
        decode(&result, json!({"result": "queued"})).state,
        JobState::Unknown(w) if w == "queued"
    ));
}

#[test]
fn the_http_status_can_be_the_state() {
    let profile = Profile::builder("bulk", "/jobs/{id}")
        .status_code(202, Canonical::Running)
        .status_code(200, Canonical::Succeeded)
        .result_url("/output/0/url")
        .build()
        .unwrap();
    let s = profile.decode(202, b"").unwrap();
    assert_eq!(
        (s.state, s.raw_state.as_deref()),
        (JobState::Pending { eta: None }, Some("202"))
    );
    let s = profile
        .decode(200, br#"{"output": [{"url": "https://f/1.ndjson"}]}"#)
        .unwrap();
    assert_eq!(s.state, JobState::Completed);
    assert_eq!(s.result_url.as_deref(), Some("https://f/1.ndjson"));
    assert!(
        profile.decode(201, b"{}").is_err(),
        "a status it does not map"
    );

    // Beside a state pointer, a mapped status wins.
    let both = Profile::builder("both", "/jobs/{id}")
        .state("/state")
        .words(Canonical::Running, ["busy"])
        .words(Canonical::Succeeded, ["done"])
        .status_code(202, Canonical::Running)
        .build()
        .unwrap();
    assert_eq!(
        both.decode(202, br#"{"state": "done"}"#).unwrap().state,
        JobState::Pending { eta: None }
    );
    assert_eq!(
        both.decode(200, br#"{"state": "done"}"#).unwrap().state,
        JobState::Completed
    );
}

#[test]
fn hints_are_read_from_the_named_headers_in_order() {
    let openai = builtin("openai-video");
    let secs = |s: u64| Some(Duration::from_secs(s));
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("9"));
    assert_eq!(openai.hints(&headers), (secs(9), None));
    headers.insert("openai-poll-after-ms", HeaderValue::from_static("2500"));
    assert_eq!(
        openai.hints(&headers),
        (secs(9), Some(Duration::from_millis(2500))),
        "a pause, beside the time left"
    );
    headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
    assert_eq!(openai.hints(&headers).0, Some(Duration::from_millis(1500)));
    headers.insert("openai-poll-after-ms", HeaderValue::from_static("soon"));
    assert_eq!(
        openai.hints(&headers).1,
        None,
        "an unusable value is no hint"
    );
    // The simulator's profile does not read OpenAI's header.
    let mut headers = HeaderMap::new();
    headers.insert("openai-poll-after-ms", HeaderValue::from_static("2500"));
    assert_eq!(builtin("simulator").hints(&headers), (None, None));
    let none = Profile::builder("quiet", "/j/{id}")
        .state("/s")
        .words(Canonical::Succeeded, ["ok"])
        .hints(Vec::<(String, HintUnit, HintMeaning)>::new())
        .build()
        .unwrap();
    headers.insert("retry-after", HeaderValue::from_static("3"));
    assert_eq!(none.hints(&headers), (None, None));
}

#[test]
fn every_field_is_checked_and_named() {
    let base = || {
        Profile::builder("p", "/jobs/{id}")
            .state("/status")
            .words(Canonical::Succeeded, ["done"])
    };
    assert!(base().build().is_ok());
    let table: [(ProfileBuilder, &str); 18] = [
        (Profile::builder("", "/jobs/{id}"), "profile.name"),
        (Profile::builder("a b", "/jobs/{id}"), "profile.name"),
        (base().base_url("ftp://x"), "profile.base_url"),
        (base().base_url("https://u:p@x"), "profile.base_url"),
        (Profile::builder("p", "/jobs"), "profile.status"),
        (Profile::builder("p", "https://evil/{id}"), "profile.status"),
        (base().events("/e"), "profile.events"),
        (base().cancel("//evil/{id}"), "profile.cancel"),
        (base().state("status"), "profile.fields.state"),
        (base().result_url("/a/~2"), "profile.fields.result_url"),
        (Profile::builder("p", "/jobs/{id}"), "profile.fields.state"),
        (
            Profile::builder("p", "/jobs/{id}").state("/s"),
            "profile.states",
        ),
        (base().words(Canonical::Failed, ["DONE "]), "profile.states"),
        (base().words(Canonical::Failed, ["  "]), "profile.states"),
        (
            base().status_code(404, Canonical::Failed),
            "profile.status_codes",
        ),
        (base().unknown_limit(0), "profile.unknown_limit"),
        (
            base().hints([("bad header", HintUnit::Seconds, HintMeaning::Pause)]),
            "profile.hints",
        ),
        (
            base().create("/jobs", "data", false, None),
            "profile.create.ids",
        ),
    ];
    for (builder, want) in table {
        let shown = format!("{builder:?}");
        assert_eq!(setting(builder.build()), want, "{shown}");
    }
    assert_eq!(
        setting(
            base()
                .create("/jobs", "/id", false, Some(json!([1])))
                .build()
        ),
        "profile.create.body"
    );
    // Auth: a header needs its name; only `header` takes one.
    let auth = |text: &str| {
        Profile::from_toml_str(&format!(
            "name = \"p\"\nstatus = \"/j/{{id}}\"\n[fields]\nstate = \"/s\"\n[states]\nsucceeded = [\"ok\"]\n[auth]\n{text}"
        ))
    };
    assert!(auth("scheme = \"bearer\"").is_ok());
    assert_eq!(setting(auth("scheme = \"header\"")), "profile.auth.header");
    assert_eq!(
        setting(auth("scheme = \"bearer\"\nheader = \"x\"")),
        "profile.auth.header"
    );
    assert_eq!(
        setting(auth("scheme = \"bearer\"\nenv = \"A B\"")),
        "profile.auth.env"
    );
    // Files: unknown fields and bad text are refused, saying why.
    let err = Profile::from_toml_str("name = \"p\"\nstatuz = \"/j/{id}\"").unwrap_err();
    assert!(err.to_string().contains("statuz"), "{err}");
    assert_eq!(setting(Profile::from_json_str("[1, 2]")), "profile");
    // TOML has no null: such a profile is written as JSON.
    let nulls = base()
        .create("/jobs", "/id", false, Some(json!({"a": null})))
        .build()
        .unwrap();
    assert!(matches!(nulls.to_toml(), Err(Error::Config(c)) if c.setting == "profile"));
    assert!(serde_json::to_string(&nulls).is_ok());
}

#[test]
fn a_profile_file_is_read_by_its_extension() {
    let dir = std::env::temp_dir().join(format!("ts-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("tasks.toml");
    let json_path = dir.join("tasks.JSON");
    let profile = Profile::builder("tasks", "/t/{id}")
        .state("/phase")
        .words(Canonical::Succeeded, ["DONE"])
        .build()
        .unwrap();
    std::fs::write(&toml_path, profile.to_toml().unwrap()).unwrap();
    std::fs::write(&json_path, serde_json::to_string(&profile).unwrap()).unwrap();
    assert_eq!(Profile::from_file(&toml_path).unwrap(), profile);
    assert_eq!(Profile::from_file(&json_path).unwrap(), profile);
    let big = dir.join("big.toml");
    std::fs::write(&big, "#".repeat(MAX_PROFILE_FILE as usize + 1)).unwrap();
    assert!(
        Profile::from_file(&big)
            .unwrap_err()
            .to_string()
            .contains("larger")
    );
    assert_eq!(
        setting(Profile::from_file(dir.join("missing.toml"))),
        "profile"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
