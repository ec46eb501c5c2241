//! Tests of the root-confined file work.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::*;

#[test]
fn relative_paths_are_checked_at_the_edge() {
    for ok in ["a", "a/b.md", "skills/x/SKILL.md", "dir/"] {
        assert!(RelPath::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "a\\b",
        "a\0b",
        "/",
    ] {
        assert!(RelPath::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn templates_follow_inner_symlinks_and_refuse_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tpl");
    std::fs::create_dir_all(root.join("shared/skills")).unwrap();
    std::fs::write(root.join("shared/skills/SKILL.md"), "a\r\nb\r\n").unwrap();
    std::fs::write(root.join("run.sh"), "echo hi\r\n").unwrap();
    std::fs::write(root.join("data.bin"), b"x\r\ny").unwrap();
    std::os::unix::fs::symlink("shared/skills", root.join("skills")).unwrap();
    let tree = collect_template(&root).unwrap();
    let get = |p: &str| {
        tree.files()
            .iter()
            .find(|f| f.path.as_str() == p)
            .unwrap_or_else(|| panic!("{p} missing from {:?}", tree.paths()))
            .data
            .clone()
    };
    assert_eq!(get("skills/SKILL.md"), b"a\nb\n");
    assert_eq!(get("shared/skills/SKILL.md"), b"a\nb\n");
    assert_eq!(get("run.sh"), b"echo hi\n");
    assert_eq!(get("data.bin"), b"x\r\ny", "binary files keep their bytes");

    std::fs::write(tmp.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink("../secret", root.join("leak")).unwrap();
    assert!(matches!(
        collect_template(&root),
        Err(SafeFsError::Escapes(p)) if p == "leak"
    ));
    std::fs::remove_file(root.join("leak")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
    assert!(matches!(
        collect_template(&root),
        Err(SafeFsError::Escapes(_))
    ));
    std::fs::remove_file(root.join("abs")).unwrap();
    std::os::unix::fs::symlink(".", root.join("shared/loop")).unwrap();
    assert!(matches!(
        collect_template(&root),
        Err(SafeFsError::TooLarge(_))
    ));
}

fn owner_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

/// Changing owners needs root; the tests run as root (and so does a host that gives
/// agents uids of their own).
fn as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test changes file owners and must run as root"
    );
}

#[test]
fn giving_a_root_away_never_follows_a_link_out_of_it() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("configs");
    let outside = tmp.path().join("host-secret");
    std::fs::create_dir_all(root.join("skills/a")).unwrap();
    std::fs::write(root.join("skills/a/SKILL.md"), "x").unwrap();
    std::fs::write(&outside, "secret").unwrap();
    std::fs::create_dir(tmp.path().join("host-dir")).unwrap();
    // What an agent could plant: links to a host file and a host directory, and a hard
    // link to a host file.
    std::os::unix::fs::symlink(&outside, root.join("shadow")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("host-dir"), root.join("skills/b")).unwrap();
    std::fs::hard_link(&outside, root.join("hard")).unwrap();
    let agent = Owner {
        uid: 2_000_000_777,
        gid: 2_000_000_777,
    };

    RootDir::open(&root).unwrap().give_to(agent).unwrap();

    let mine = (agent.uid, agent.gid);
    for own in ["", "skills", "skills/a", "skills/a/SKILL.md"] {
        assert_eq!(owner_of(&root.join(own)), mine, "{own}");
    }
    for host in [
        outside.as_path(),
        &tmp.path().join("host-dir"),
        &root.join("shadow"),
        &root.join("skills/b"),
    ] {
        assert_eq!(owner_of(host), (0, 0), "{}", host.display());
    }
}

#[test]
fn an_owned_root_gives_what_it_writes_to_its_owner() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let agent = Owner {
        uid: 2_000_000_778,
        gid: 2_000_000_778,
    };
    let root = RootDir::open_or_create(&tmp.path().join("configs"))
        .unwrap()
        .owned_by(Some(agent));
    let mut tree = FileTree::new();
    tree.insert(RelPath::parse("plugins/p/.complete").unwrap(), "", 0o644);
    tree.insert(RelPath::parse(".auth_token").unwrap(), "t", 0o600);
    root.write_tree(&tree).unwrap();
    root.create_dir_all(&RelPath::parse("plugins/.staging/q").unwrap())
        .unwrap();
    let mine = (agent.uid, agent.gid);
    for path in [
        "plugins",
        "plugins/p",
        "plugins/p/.complete",
        ".auth_token",
        "plugins/.staging",
        "plugins/.staging/q",
    ] {
        assert_eq!(owner_of(&root.path().join(path)), mine, "{path}");
    }
    let mode = std::fs::metadata(root.path().join(".auth_token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The root itself stays as it was until it is given away.
    assert_eq!(owner_of(root.path()), (0, 0));
}

#[test]
fn a_tree_round_trips_through_tar_and_a_root_dir() {
    let mut tree = FileTree::new();
    tree.insert(RelPath::parse("config.yaml").unwrap(), "name: a\n", 0o644);
    tree.insert(RelPath::parse("skills/x/SKILL.md").unwrap(), "s", 0o644);
    tree.insert(RelPath::parse(".auth_token").unwrap(), "t", 0o600);
    let tar = tree.to_tar().unwrap();
    // Docker prefixes entries with the directory name; emulate that.
    let mut prefixed = tar::Builder::new(Vec::new());
    let mut reader = tar::Archive::new(tar.as_slice());
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = format!("configs/{}", entry.path().unwrap().display());
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        prefixed
            .append_data(&mut header, path, data.as_slice())
            .unwrap();
    }
    let entries = reroot(read_tar(&prefixed.into_inner().unwrap()).unwrap(), None);
    assert!(
        entries.iter().any(
            |(p, d)| p.as_str() == "skills/x/SKILL.md" && d.as_deref() == Some(b"s".as_slice())
        )
    );

    let tmp = tempfile::tempdir().unwrap();
    let root = RootDir::open_or_create(&tmp.path().join("configs")).unwrap();
    root.write_tree(&tree).unwrap();
    let mode = std::fs::metadata(tmp.path().join("configs/.auth_token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed = root.list(None, 5).unwrap();
    assert_eq!(
        listed.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        [
            ".auth_token",
            "config.yaml",
            "skills",
            "skills/x",
            "skills/x/SKILL.md"
        ]
    );
    assert_eq!(root.list(None, 1).unwrap().len(), 3);
    let entries = root
        .entries(Some(&RelPath::parse("skills").unwrap()))
        .unwrap();
    assert_eq!(
        entries,
        [
            (RelPath::parse("skills/x").unwrap(), None),
            (
                RelPath::parse("skills/x/SKILL.md").unwrap(),
                Some(b"s".to_vec())
            ),
        ]
    );
    root.remove(&RelPath::parse("skills").unwrap()).unwrap();
    assert!(matches!(
        root.read(&RelPath::parse("skills/x/SKILL.md").unwrap()),
        Err(SafeFsError::NotFound)
    ));
    // A symlink planted in the root cannot redirect a read or a write outside it.
    std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("configs/host")).unwrap();
    assert!(root.read(&RelPath::parse("host").unwrap()).is_err());
    let mut over = FileTree::new();
    over.insert(RelPath::parse("host").unwrap(), "mine", 0o644);
    root.write_tree(&over).unwrap();
    assert_eq!(
        root.read(&RelPath::parse("host").unwrap()).unwrap(),
        b"mine"
    );
    assert_ne!(std::fs::read("/etc/hostname").unwrap_or_default(), b"mine");
}
