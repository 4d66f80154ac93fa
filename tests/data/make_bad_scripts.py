"""Regenerates tests/data/bad_scripts/ and its expectations.yaml: one broken story per common mistake or attack."""
import io

import yaml
from pathlib import Path
D = Path(__file__).resolve().parent / "bad_scripts"; D.mkdir(parents=True, exist_ok=True)
(D/"refs").mkdir(exist_ok=True)
from PIL import Image
Image.new("RGB", (32, 32), (200, 120, 40)).save(D/"refs/ok_face.png")
(D/"refs/not_an_image.png").write_text("this is text, not a PNG\n")
(D/"refs/a_folder").mkdir(exist_ok=True); (D/"refs/a_folder/.keep").write_text("")
(D/"refs/clip.txt").write_text("not a video\n")
# a PNG that claims 5000x5000 (palette, tiny on disk)
Image.new("1", (5000, 5000)).save(D/"refs/huge_dims.png", optimize=True)

HEAD = """title: Broken
fps: 8
resolution: [128, 128]
characters:
  - id: mia
    name: Mia
    description: a girl with a round orange face
    faces: [refs/ok_face.png]
  - id: tom
    name: Tom
    description: a boy with a square green face
scenes:
  - id: beach
    setting: a sunny beach
    shots:
"""
SHOT = """      - duration: 4
        characters: [mia]
        action: Mia runs to the right
        camera: wide shot
"""
def story(shot=SHOT, head=HEAD, tail=""):
    return head + shot + tail
cases = {}
def case(name, text, line, col, field, expect):
    cases[name] = dict(text=text, line=line, col=col, field=field, expect=expect)

# line numbers: HEAD has 15 lines, the shot starts on line 16
case("missing_title", story(head=HEAD.replace("title: Broken\n", "")), 1, 1, "title", "required")
case("unknown_top_field", story(head=HEAD.replace("title: Broken", "titel: Broken")), 1, 1, "titel", "unknown field")
case("title_number", story(head=HEAD.replace("title: Broken", "title: 42")), 1, 8, "title", "found the number 42")
case("missing_scenes", HEAD[: HEAD.index("scenes:")], 1, 1, "scenes", "required")
case("empty_scenes", HEAD[: HEAD.index("scenes:")] + "scenes: []\n", 12, 9, "scenes", "at least one scene")
case("empty_shots", HEAD.replace("    shots:\n", "    shots: []\n"), 15, 12, "scenes[0].shots", "at least one shot")
case("negative_duration", story(SHOT.replace("duration: 4", "duration: -3")), 16, 19, "scenes[0].shots[0].duration", "a value > 0")
case("zero_duration", story(SHOT.replace("duration: 4", "duration: 0")), 16, 19, "scenes[0].shots[0].duration", "a value > 0")
case("absurd_duration", story(SHOT.replace("duration: 4", "duration: 100000")), 16, 19, "scenes[0].shots[0].duration", "a value ≤ 600")
case("duration_text", story(SHOT.replace("duration: 4", "duration: 4s")), 16, 19, "scenes[0].shots[0].duration", "'4s'")
case("shorter_than_a_frame", story(SHOT.replace("duration: 4", "duration: 0.05")), 16, 19, "scenes[0].shots[0].duration", "at least one frame")
case("unknown_character", story(SHOT.replace("[mia]", "[mia, bob]")), 17, 27, "scenes[0].shots[0].characters[1]", "found 'bob'")
case("typo_character", story(SHOT.replace("[mia]", "[mai]")), 17, 22, "scenes[0].shots[0].characters[0]", "did you mean 'mia'")
case("character_twice_in_shot", story(SHOT.replace("[mia]", "[mia, mia]")), 17, 27, "scenes[0].shots[0].characters[1]", "twice")
case("characters_not_list", story(SHOT.replace("[mia]", "mia")), 17, 21, "scenes[0].shots[0].characters", "a list")
case("duplicate_character_id", story(head=HEAD.replace("id: tom", "id: mia")), 9, 9, "characters[1].id", "already used on line 5")
case("duplicate_scene_id", story(tail="  - id: beach\n    setting: another beach\n    shots:\n" + SHOT), 20, 9, "scenes[1].id", "already used on line 13")
case("uppercase_id", story(head=HEAD.replace("id: tom", "id: Tom")), 9, 9, "characters[1].id", "lowercase id")
case("id_with_space", story(head=HEAD.replace("id: beach", "id: sunny beach")), 13, 9, "scenes[0].id", "lowercase id")
case("unknown_shot_field", story(SHOT.replace("action:", "acton:")), 18, 9, "scenes[0].shots[0].acton", "unknown field 'acton'")
case("missing_action", story(SHOT.replace("        action: Mia runs to the right\n", "")), 16, 9, "scenes[0].shots[0].action", "required")
case("empty_action", story(SHOT.replace("action: Mia runs to the right", 'action: ""')), 18, 17, "scenes[0].shots[0].action", "expected at least 1 character")
case("null_camera", story(SHOT.replace("camera: wide shot", "camera:")), 19, 16, "scenes[0].shots[0].camera", "nothing (null)")
case("missing_description", story(head=HEAD.replace("    description: a boy with a square green face\n", "")), 9, 5, "characters[1].description", "required")
case("fps_zero", story(head=HEAD.replace("fps: 8", "fps: 0")), 2, 6, "fps", "a value ≥ 1")
case("fps_huge", story(head=HEAD.replace("fps: 8", "fps: 1000")), 2, 6, "fps", "a value ≤ 60")
case("fps_float", story(head=HEAD.replace("fps: 8", "fps: 8.5")), 2, 6, "fps", "a whole number")
case("resolution_not_multiple", story(head=HEAD.replace("[128, 128]", "[100, 128]")), 3, 14, "resolution[0]", "multiple of 16")
case("resolution_too_small", story(head=HEAD.replace("[128, 128]", "[32, 128]")), 3, 14, "resolution[0]", "a value ≥ 64")
case("resolution_huge", story(head=HEAD.replace("[128, 128]", "[128, 8192]")), 3, 19, "resolution[1]", "a value ≤ 2048")
case("resolution_three_numbers", story(head=HEAD.replace("[128, 128]", "[128, 128, 128]")), 3, 13, "resolution", "at most 2 items")
case("seed_negative", story(head=HEAD.replace("fps: 8", "fps: 8\nseed: -1")), 3, 7, "seed", "a value ≥ 0")
case("transition_invalid", story(SHOT + "        transition: fade\n"), 20, 21, "scenes[0].shots[0].transition", "'cut' or 'continuous'")
case("missing_face_file", story(head=HEAD.replace("refs/ok_face.png", "refs/nobody.png")), 8, 13, "characters[0].faces[0]", "no file at 'refs/nobody.png'")
case("face_not_an_image", story(head=HEAD.replace("refs/ok_face.png", "refs/not_an_image.png")), 8, 13, "characters[0].faces[0]", "not one")
case("face_outside_folder", story(head=HEAD.replace("refs/ok_face.png", "../../../etc/hostname")), 8, 13, "characters[0].faces[0]", "leads outside")
case("face_absolute_path", story(head=HEAD.replace("refs/ok_face.png", "/etc/hostname")), 8, 13, "characters[0].faces[0]", "absolute path")
case("face_too_large", story(head=HEAD.replace("refs/ok_face.png", "refs/huge_dims.png")), 8, 13, "characters[0].faces[0]", "at most 4096x4096")
case("reference_missing", story(head=HEAD.replace("characters:\n  - id: mia", "references: [refs/frame_01.png]\ncharacters:\n  - id: mia", 1)), 4, 14, "references[0]", "no file")
case("end_frame_is_folder", story(SHOT + "        end_frame: refs/a_folder\n"), 20, 20, "scenes[0].shots[0].end_frame", "directory")
case("motion_reference_not_video", story(SHOT + "        motion_reference: refs/clip.txt\n"), 20, 27, "scenes[0].shots[0].motion_reference", "expected a video")
case("top_level_list", "- title: Broken\n- scenes: []\n", 1, 1, "", "found a list")
case("empty_file", "# nothing here\n", 1, 1, "", "empty file")
case("syntax_error", story(SHOT.replace("[mia]", "[mia")), 18, 15, "", "syntax error")
case("tab_indentation", story(SHOT.replace("        action:", "\taction:")), 18, 1, "", "syntax error")
case("duplicate_key", story(head=HEAD.replace("fps: 8", "fps: 8\ntitle: Again")), 3, 1, "title", "twice")
case("alias_bomb", 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n', None, None, "", "alias bomb")
case("deep_nesting", "title: " + "[" * 5000 + "]" * 5000 + "\n", None, None, "", "nesting")
case("python_tag", story(head=HEAD.replace("title: Broken", "title: !!python/object/apply:os.system ['touch /tmp/moviedreamer_pwned']")), 1, 8, "title", "YAML tag")
case("merge_key", story(head=HEAD.replace("fps: 8", "base: &base {fps: 8}\n<<: *base")), 3, 1, "", "merge key")
case("two_documents", story() + "---\ntitle: Second\n", 20, 1, "", "syntax error")
case("shots_not_list", HEAD.replace("    shots:\n", "    shots: three shots\n"), 15, 12, "scenes[0].shots", "a list")
for name, c in cases.items():
    (D / f"{name}.yaml").write_text(c.pop("text"), encoding="utf-8")
# byte-level cases
(D / "non_utf8.yaml").write_bytes(story().replace("Mia runs", "Mia runs\u00e9").encode("utf-8").replace("\u00e9".encode(), b"\xe9"))
cases["non_utf8"] = dict(line=18, col=25, field="", expect="not valid UTF-8")
png = io.BytesIO(); Image.new("RGB", (8, 8)).save(png, "PNG")
(D / "binary_file.yaml").write_bytes(png.getvalue())
cases["binary_file"] = dict(line=None, col=None, field="", expect="binary data")
meta = {k: v for k, v in sorted(cases.items())}
with open(D / "expectations.yaml", "w") as f:
    f.write("# One entry per broken script: where the first error must point, and a phrase its message must contain.\n")
    f.write("# line/col null = any position (the file cannot be located more precisely, e.g. binary data).\n")
    yaml.safe_dump(meta, f, sort_keys=True, allow_unicode=True)
print(len(cases), "cases")
