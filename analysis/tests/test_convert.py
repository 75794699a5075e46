"""The converter on synthetic exports of a thompson study (synthetic_export.py writes them in
the export's format), and the thompson functions against the probabilities and updates the
export records. Run: cd analysis && ../.venv-analysis/bin/python -m unittest discover tests
"""

import json
import pathlib
import pickle
import shutil
import sys
import tempfile
import unittest

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "functions"))

import synthetic_export  # noqa: E402
from justin_lifejacket import convert  # noqa: E402
from justin_lifejacket.export import ExportError, read_export  # noqa: E402
from thompson_action1_prob import thompson_action1_prob  # noqa: E402
from thompson_update_estimating import thompson_update_estimating  # noqa: E402
from wcls_excursion import wcls_excursion  # noqa: E402
from wcls_excursion_theta import wcls_excursion_theta  # noqa: E402


def load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


class Converted(unittest.TestCase):
    """A small study: 5 participants x 10 days, an update every 8 decisions."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = pathlib.Path(tempfile.mkdtemp())
        cls.export_dir = cls.tmp / "export"
        cls.study = synthetic_export.write(
            cls.export_dir, participants=5, times=10, update_every=8, seed=5,
            unavailable_share=0.15, missing_share=0.15, late_share=0.2, missed_call_share=0.1,
        )
        cls.out = cls.tmp / "out"
        cls.summary = convert.convert(cls.export_dir, cls.out)
        cls.export = read_export(cls.export_dir)
        cls.frame = load(cls.out / "analysis_df.pkl")
        cls.prob_args = load(cls.out / "action_prob_func_args.pkl")
        cls.update_args = load(cls.out / "alg_update_func_args.pkl")
        with open(cls.out / "lifejacket_args.json") as f:
            cls.arguments = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_the_study_has_what_the_checks_must_handle(self):
        cells = self.study["cells"].values()
        self.assertTrue(any(not c["called"] for c in cells), "a time without a call")
        self.assertTrue(any(c["called"] and not c["available"] for c in cells), "unavailable")
        self.assertGreater(self.summary["missing_outcomes"], 0)
        self.assertGreaterEqual(len(self.summary["updates"]), 2)

    def test_the_table_is_one_row_per_participant_and_time_with_numeric_columns(self):
        frame = self.frame
        self.assertEqual(len(frame), 5 * 10)
        self.assertEqual(list(frame["user_id"]), sorted(frame["user_id"]))
        for user, rows in frame.groupby("user_id"):
            self.assertEqual(list(rows["calendar_t"]), list(range(10)))
        for column in ["calendar_t", "in_study", "action", "action1_prob", "policy_num", "reward",
                       "available", "observed", "intercept", "temperature"]:
            self.assertTrue(np.issubdtype(frame[column].dtype, np.number), column)
        self.assertEqual(frame["user_id"].dtype, object)
        in_study = frame[frame["in_study"] == 1]
        self.assertTrue(np.all(np.isfinite(in_study["reward"])))
        self.assertTrue(np.all(np.isfinite(in_study["policy_num"])))
        self.assertTrue(frame.loc[frame["in_study"] == 0, "policy_num"].isna().all())
        # The staggered participants: u00 starts at 2, u01 ends before 7.
        u00 = frame[frame["user_id"] == "u00"]
        self.assertEqual(list(u00["in_study"])[:3], [0, 0, 1])
        u01 = frame[frame["user_id"] == "u01"]
        self.assertEqual(list(u01["in_study"])[-3:], [0, 0, 0])

    def test_cells_without_a_state_get_the_dummy_covariates(self):
        no_state = self.frame[self.frame["has_state"] == 0]
        self.assertGreater(len(no_state), 0)
        self.assertTrue((no_state["intercept"] == 1.0).all())
        self.assertTrue((no_state["temperature"] == 0.0).all())
        # The recorded probability stays 0 by default.
        unavailable = self.frame[(self.frame["in_study"] == 1) & (self.frame["available"] == 0)]
        self.assertTrue((unavailable["action1_prob"] == 0.0).all())
        self.assertEqual(self.arguments["unavailable_prob"], "recorded")

    def test_probability_arguments_follow_the_argspecs(self):
        frame = self.frame
        self.assertEqual(sorted(self.prob_args), list(range(10)))
        for row in frame.itertuples(index=False):
            args = self.prob_args[row.calendar_t][row.user_id]
            if row.in_study == 0:
                self.assertEqual(args, ())
                continue
            beta, x, bounds, available, drawn, recorded = args
            version = self.export.policy_versions[int(row.policy_num)]
            np.testing.assert_array_equal(beta, self.export.parameters[version]["beta"])
            np.testing.assert_array_equal(x, [row.intercept, row.temperature])
            np.testing.assert_array_equal(bounds, [0.2, 0.8])
            self.assertEqual(available, float(row.available))
            self.assertEqual(drawn, float(row.drawn_by_policy))
            self.assertEqual(recorded, row.action1_prob)
        # One beta array per policy, shared by every cell it drove.
        betas = {}
        for t, by_user in self.prob_args.items():
            for user, args in by_user.items():
                if args:
                    p = int(self.frame[(self.frame.user_id == user) & (self.frame.calendar_t == t)].policy_num.iloc[0])
                    betas.setdefault(p, args[0])
                    self.assertIs(betas[p], args[0])

    def test_update_arguments_hold_the_rows_each_update_read(self):
        policies = self.summary["policies"]
        self.assertEqual(sorted(self.update_args), policies[1:])
        rows = self.export.update_rows
        for policy_num, by_user in self.update_args.items():
            version = self.export.policy_versions[policy_num]
            read = [r for r in rows if int(r["parameter_version"]) == version]
            users = {r["user_id"] for r in read}
            self.assertEqual(set(by_user), set(self.frame["user_id"]))
            for user, args in by_user.items():
                if user not in users:
                    self.assertEqual(args, ())
                    continue
                beta, xs, actions, rewards, m0, p0, s2, n = args
                mine = [r for r in read if r["user_id"] == user]
                np.testing.assert_array_equal(beta, self.export.parameters[version]["beta"])
                np.testing.assert_array_equal(xs, [[r["intercept"], r["temperature"]] for r in mine])
                np.testing.assert_array_equal(actions, [r["action"] for r in mine])
                np.testing.assert_array_equal(rewards, [r["reward"] for r in mine])
                self.assertEqual(n, float(len(users)))
                self.assertEqual(s2, 1.0)
                self.assertEqual(p0.shape, (4, 4))

    def test_lifejacket_arguments(self):
        a = self.arguments
        self.assertEqual(a["action_prob_func_args_beta_index"], 0)
        self.assertEqual(a["alg_update_func_args_beta_index"], 0)
        self.assertEqual(a["alg_update_func_type"], "estimating")
        self.assertEqual(a["action_col_name"], "action")
        self.assertEqual(a["policy_num_col_name"], "policy_num")
        for key in ["action_prob_func_filename", "alg_update_func_filename",
                    "inference_func_filename", "theta_calculation_func_filename"]:
            self.assertTrue((self.out / a[key]).exists(), a[key])

    def test_the_probability_function_reproduces_every_recorded_probability(self):
        worst = 0.0
        for t, by_user in self.prob_args.items():
            for user, args in by_user.items():
                if not args:
                    continue
                row = self.frame[(self.frame.user_id == user) & (self.frame.calendar_t == t)].iloc[0]
                got = float(thompson_action1_prob(*args))
                worst = max(worst, abs(got - row["action1_prob"]))
        self.assertLess(worst, 1e-9)

    def test_the_update_function_roots_at_each_update_beta(self):
        for policy_num, by_user in self.update_args.items():
            total = sum(np.asarray(thompson_update_estimating(*args)) for args in by_user.values() if args)
            scale = sum(np.abs(np.asarray(thompson_update_estimating(*args))) for args in by_user.values() if args)
            self.assertLess(np.max(np.abs(total) / (scale + 1.0)), 1e-9, policy_num)
            # And not at another beta.
            moved = [(args[0] + 0.01,) + args[1:] for args in by_user.values() if args]
            total = sum(np.asarray(thompson_update_estimating(*args)) for args in moved)
            self.assertGreater(np.max(np.abs(total)), 1e-4)

    def test_the_theta_function_roots_the_inference_function(self):
        theta = jnp.asarray(wcls_excursion_theta(self.frame))
        total = np.zeros(2)
        for user, rows in self.frame.groupby("user_id"):
            rows = rows[rows["in_study"] == 1]
            column = lambda name: rows[name].to_numpy()[:, None]  # noqa: E731
            total += np.asarray(wcls_excursion(
                theta, column("action"), column("action1_prob"), column("reward"),
                column("available"), column("observed")))
        self.assertLess(np.max(np.abs(total)), 1e-9)

    def test_a_placeholder_probability_replaces_zero_where_available_is_0(self):
        out = self.tmp / "placeholder"
        convert.convert(self.export_dir, out, unavailable_prob=0.5)
        frame = load(out / "analysis_df.pkl")
        prob_args = load(out / "action_prob_func_args.pkl")
        target = (frame["in_study"] == 1) & (frame["available"] == 0)
        self.assertTrue((frame.loc[target, "action1_prob"] == 0.5).all())
        self.assertTrue(frame.loc[frame["available"] == 1, "action1_prob"].between(0.2, 0.8).all())
        for row in frame[target].itertuples(index=False):
            args = prob_args[row.calendar_t][row.user_id]
            # Given as a fixed probability, not drawn by the policy: the function returns it.
            self.assertEqual(args[3:], (1.0, 0.0, 0.5))
            self.assertEqual(float(thompson_action1_prob(*args)), 0.5)

    def test_a_non_empty_output_directory_is_refused(self):
        with self.assertRaisesRegex(convert.ConversionError, "holds files already"):
            convert.convert(self.export_dir, self.out)


class HandMade(unittest.TestCase):
    """fixtures/tiny: two participants over four days, written by hand. "a,1" (an id that
    needs quoting) has a decision, an unavailable one, a day without a call and a warm-up
    decision with a missing outcome under policy 2; b starts a day late and has left before
    the last day (a decision stored out of study). Version 2 drove no decision."""

    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp())
        self.out = self.tmp / "out"
        convert.convert(HERE / "fixtures" / "tiny", self.out)
        self.frame = load(self.out / "analysis_df.pkl")
        self.prob_args = load(self.out / "action_prob_func_args.pkl")
        self.update_args = load(self.out / "alg_update_func_args.pkl")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def assert_args(self, got, expected):
        self.assertEqual(len(got), len(expected))
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))

    def test_the_table(self):
        frame = self.frame
        self.assertEqual(list(frame["user_id"]), ["a,1"] * 4 + ["b"] * 4)
        self.assertEqual(list(frame["in_study"]), [1, 1, 1, 1, 0, 1, 1, 0])
        self.assertEqual(list(frame["policy_num"].fillna(-1)), [1, 1, 1, 2, -1, 1, 2, -1])
        self.assertEqual(list(frame["action1_prob"]), [0.5, 0.0, 0.0, 0.2, 0.0, 0.5, 0.8, 0.0])
        self.assertEqual(list(frame["reward"]), [2.5, 0.0, 0.0, 0.0, 0.0, -0.75, 1.0, 0.0])
        self.assertEqual(list(frame["steps"]), [3.25, 0.0, 0.0, -1.5, 0.0, 0.5, 2.0, 0.0])
        self.assertEqual(list(frame["intercept"]), [1.0] * 8)

    def test_the_probability_arguments(self):
        b1 = [0.0] * 14
        b3 = [1.5, 0.25, -0.5, 0.125] + [0.25] * 10
        bounds = [0.2, 0.8]
        args = self.prob_args
        self.assertEqual(sorted(args), [0, 1, 2, 3])
        self.assert_args(args[0]["a,1"], (b1, [1.0, 3.25], bounds, 1.0, 1.0, 0.5))
        self.assertEqual(args[0]["b"], ())
        self.assert_args(args[1]["a,1"], (b1, [1.0, 0.0], bounds, 0.0, 0.0, 0.0))
        self.assert_args(args[1]["b"], (b1, [1.0, 0.5], bounds, 1.0, 1.0, 0.5))
        self.assert_args(args[2]["a,1"], (b1, [1.0, 0.0], bounds, 0.0, 0.0, 0.0))
        self.assert_args(args[2]["b"], (b3, [1.0, 2.0], bounds, 1.0, 1.0, 0.8))
        self.assert_args(args[3]["a,1"], (b3, [1.0, -1.5], bounds, 1.0, 0.0, 0.2))
        self.assertEqual(args[3]["b"], ())

    def test_the_update_arguments(self):
        b3 = [1.5, 0.25, -0.5, 0.125] + [0.25] * 10
        identity = np.eye(4)
        self.assertEqual(sorted(self.update_args), [2])
        update = self.update_args[2]
        self.assert_args(update["a,1"], (b3, [[1.0, 3.25]], [1.0], [2.5], [0, 0, 0, 0], identity, 1.0, 2.0))
        self.assert_args(update["b"], (b3, [[1.0, 0.5]], [0.0], [-0.75], [0, 0, 0, 0], identity, 1.0, 2.0))

    def test_with_a_placeholder_probability(self):
        out = self.tmp / "placeholder"
        convert.convert(HERE / "fixtures" / "tiny", out, unavailable_prob=0.5)
        frame = load(out / "analysis_df.pkl")
        args = load(out / "action_prob_func_args.pkl")
        self.assertEqual(list(frame["action1_prob"]), [0.5, 0.5, 0.5, 0.2, 0.0, 0.5, 0.8, 0.0])
        self.assertEqual(list(frame["available"]), [1, 0, 0, 1, 0, 1, 1, 0])
        self.assertEqual(args[1]["a,1"][3:], (1.0, 0.0, 0.5))
        self.assertEqual(args[2]["a,1"][3:], (1.0, 0.0, 0.5))
        self.assertEqual(args[3]["a,1"][3:], (1.0, 0.0, 0.2))


class Refusals(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp())
        self.export_dir = self.tmp / "export"
        synthetic_export.write(self.export_dir, participants=3, times=8, update_every=5, seed=2)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_a_directory_without_a_manifest(self):
        with self.assertRaisesRegex(ExportError, "no manifest.json"):
            read_export(self.tmp)

    def test_another_format_version(self):
        path = self.export_dir / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["format_version"] = 2
        path.write_text(json.dumps(manifest))
        with self.assertRaisesRegex(ExportError, "format_version 2"):
            read_export(self.export_dir)

    def test_a_header_that_does_not_match_the_manifest(self):
        path = self.export_dir / "grid.csv"
        text = path.read_text().replace("temperature", "temp", 1)
        path.write_text(text)
        with self.assertRaisesRegex(ExportError, "the header is"):
            read_export(self.export_dir)

    def test_an_update_whose_rows_were_deleted_since(self):
        path = self.export_dir / "parameters.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        lines[1]["update"]["rows_read"] += 1
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        with self.assertRaisesRegex(convert.ConversionError, "cannot be reproduced"):
            convert.convert(self.export_dir, self.tmp / "out")

    def test_an_update_that_read_rows_of_a_participant_not_in_the_grid(self):
        path = self.export_dir / "update_rows.csv"
        lines = path.read_text().splitlines()
        fields = lines[1].split(",")
        fields[2] = "erased-0001"
        lines[1] = ",".join(fields)
        path.write_text("\n".join(lines) + "\n")
        with self.assertRaisesRegex(convert.ConversionError, "not in grid.csv"):
            convert.convert(self.export_dir, self.tmp / "out")


if __name__ == "__main__":
    unittest.main()
