//! Section 3: ENV (ENV-*).

use builder_core::DEFAULT_PATH;

use crate::util::{Case, R, busybox_config, expect_err, ok, strings};

pub(crate) fn env_01_replaced_in_place() -> R {
    let img =
        ok(Case::new().build("FROM {BUSYBOX}\nENV PATH=/opt/bin:$PATH\nENV FOO=1\nENV FOO=2\n"))?;
    let base = strings(&busybox_config()?["config"]["Env"]);
    let base_path = base
        .iter()
        .position(|e| e.starts_with("PATH="))
        .ok_or("busybox has no PATH")?;
    let env = img.env()?;
    ensure_eq!(
        env.get(base_path).cloned().unwrap_or_default(),
        format!("PATH=/opt/bin:{}", &base[base_path][5..])
    );
    ensure_eq!(
        env.iter()
            .filter(|e| e.starts_with("FOO="))
            .collect::<Vec<_>>(),
        [&"FOO=2".to_owned()]
    );
    ensure_eq!(env.len(), base.len() + 1, "{env:?}");
    Ok(())
}

pub(crate) fn env_02_references_use_values_from_before() -> R {
    let img =
        ok(Case::new()
            .build("FROM {BUSYBOX}\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n"))?;
    let env = img.env()?;
    for want in ["abc=bye", "def=hello", "ghi=bye"] {
        ensure!(env.contains(&want.to_owned()), "no {want} in {env:?}");
    }
    Ok(())
}

pub(crate) fn env_03_legacy_form_takes_the_rest() -> R {
    let img = ok(Case::new().build("FROM scratch\nENV ONE TWO= THREE=world\n"))?;
    let env = img.env()?;
    ensure!(env.contains(&"ONE=TWO= THREE=world".to_owned()), "{env:?}");
    ensure!(
        !env.iter()
            .any(|e| e.starts_with("TWO=") || e.starts_with("THREE=")),
        "{env:?}"
    );
    Ok(())
}

pub(crate) fn env_04_quotes_and_escapes() -> R {
    let img = ok(Case::new()
        .build("FROM scratch\nENV HOME_=/root\nENV A=\"a b\" B=c\\ d C='$HOME_' D=\"$HOME_\"\n"))?;
    let env = img.env()?;
    for want in ["A=a b", "B=c d", "C=$HOME_", "D=/root"] {
        ensure!(env.contains(&want.to_owned()), "no {want:?} in {env:?}");
    }
    Ok(())
}

pub(crate) fn env_05_expanded_in_later_instructions() -> R {
    let c = Case::new();
    c.file("a", "a").file("$DIR", "literal");
    let img = ok(c.build(
        "FROM {BUSYBOX}\nENV DIR=/data\nWORKDIR $DIR/app\nCOPY a ${DIR}/\nCOPY \\$DIR /lit\n",
    ))?;
    ensure_eq!(img.cfg()?["WorkingDir"], "/data/app");
    ensure_eq!(img.read("/data/a")?, "a");
    ensure_eq!(img.read("/lit")?, "literal");
    Ok(())
}

pub(crate) fn env_06_scratch_default_path() -> R {
    let img = ok(Case::new().build("FROM scratch\nENV foo=bar\n"))?;
    ensure_eq!(
        img.env()?,
        [format!("PATH={DEFAULT_PATH}"), "foo=bar".to_owned()]
    );
    Ok(())
}

pub(crate) fn env_07_inherited_from_stage() -> R {
    ok(Case::new().build("FROM {BUSYBOX} AS a\nENV X=1\nFROM a\nRUN [ \"$X\" = 1 ]\n"))?;
    Ok(())
}

pub(crate) fn env_08_printf_text_verbatim() -> R {
    let img =
        ok(Case::new()
            .build("FROM {BUSYBOX}\nENV myenv foo%sbar\nRUN [ \"$myenv\" = 'foo%sbar' ]\n"))?;
    ensure!(
        img.env()?.contains(&"myenv=foo%sbar".to_owned()),
        "{:?}",
        img.env()?
    );
    Ok(())
}

pub(crate) fn env_09_words_need_equals() -> R {
    expect_err(
        Case::new().build("FROM scratch\nENV A=1 B\n"),
        "can't find = in \"B\". Must be of the form: name=value",
    )?;
    expect_err(Case::new().build("FROM scratch\nENV PATH\n"), "ENV")?;
    Ok(())
}
