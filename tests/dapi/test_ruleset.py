"""Native rule, decoder and CDB-list file functions."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.support import DapiEnv
from wazuhcluster.dapi.functions import ruleset as rs
from wazuhcluster.dapi.results import WazuhError

RULE = '<group name="local,">\n  <rule id="100001" level="5">\n    <if_sid>5716</if_sid>\n' \
       '    <srcip>1.1.1.1</srcip>\n    <description>sshd &amp; more</description>\n' \
       '  </rule>\n</group>\n'


class Fixture(SynchronousTestCase):

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        for rel in ("ruleset/rules/0010-rules_config.xml", "ruleset/rules/0015-ossec_rules.xml",
                    "ruleset/decoders/0005-wazuh_decoders.xml"):
            self.env.write(rel, "<group name=\"x\"></group>\n")
        self.env.write("etc/rules/local_rules.xml", RULE)
        self.env.write("etc/decoders/local_decoder.xml", "<decoder name=\"local\"/>\n")
        self.env.write("etc/lists/audit-keys", "key1:value1\nkey2:\n")
        self.env.write("etc/lists/sub/blocked", '"a:b":"c"\nplain:x\n')
        self.env.write("etc/lists/audit-keys.cdb", "compiled")
        self.ossec("""<ossec_config>
  <ruleset>
    <decoder_dir>ruleset/decoders</decoder_dir>
    <rule_dir>ruleset/rules</rule_dir>
    <rule_exclude>0015-ossec_rules.xml</rule_exclude>
    <list>etc/lists/audit-keys</list>
    <decoder_dir>etc/decoders</decoder_dir>
    <rule_dir>etc/rules</rule_dir>
  </ruleset>
</ossec_config>
""")

    def ossec(self, ruleset: str) -> None:
        text = self.env.read("etc/ossec.conf")
        self.env.write("etc/ossec.conf", text + ruleset)


class Rules(Fixture):

    def test_list_files(self) -> None:
        result = self.env.call(rs.get_rules_files)
        self.assertEqual(result.affected_items, [
            {"filename": "0010-rules_config.xml", "relative_dirname": "ruleset/rules",
             "status": "enabled"},
            {"filename": "0015-ossec_rules.xml", "relative_dirname": "ruleset/rules",
             "status": "disabled"},
            {"filename": "local_rules.xml", "relative_dirname": "etc/rules", "status": "enabled"}])
        self.assertEqual(result.render()["message"], "All rule files were returned")
        only = self.env.call(rs.get_rules_files, status="disabled", select=["filename"])
        self.assertEqual(only.affected_items, [{"filename": "0015-ossec_rules.xml"}])
        mine = self.env.call(rs.get_rules_files, relative_dirname="etc/rules/")
        self.assertEqual(len(mine.affected_items), 1)
        paged = self.env.call(rs.get_rules_files, sort_by=["filename"], sort_ascending=False,
                              limit=1, offset=1)
        self.assertEqual((paged.total_affected_items, paged.affected_items[0]["filename"]),
                         (3, "0015-ossec_rules.xml"))
        exc = self.assertRaises(WazuhError, self.env.call, rs.get_rules_files, status="maybe")
        self.assertEqual(exc.code, 1202)

    def test_get_file(self) -> None:
        self.assertEqual(self.env.call(rs.get_rule_file, filename="local_rules.xml", raw=True),
                         RULE)
        parsed = self.env.call(rs.get_rule_file, filename="local_rules.xml")
        group = parsed.affected_items[0]["group"]
        self.assertEqual(group["@name"], "local,")
        self.assertEqual(group["rule"]["@id"], "100001")
        self.assertEqual(group["rule"]["description"], "sshd & more")
        missing = self.env.call(rs.get_rule_file, filename="nope.xml")
        [(error, ids)] = missing.failed_items.items()
        self.assertEqual((error.code, ids), (1415, {"nope.xml"}))
        self.assertEqual(missing.render()["message"], "No rule was returned")
        traversal = self.env.call(rs.get_rule_file, filename="../../etc/ossec.conf", raw=True)
        self.assertEqual([e.code for e in traversal.failed_items], [1415])

    def test_upload_and_overwrite(self) -> None:
        result = self.env.call(rs.upload_rule_file, filename="new.xml", content=RULE)
        self.assertEqual(result.affected_items, ["etc/rules/new.xml"])
        self.assertEqual(result.render()["message"], "Rule was successfully uploaded")
        self.assertEqual(self.env.read("etc/rules/new.xml"), RULE)
        again = self.env.call(rs.upload_rule_file, filename="new.xml", content="<a/>")
        [(error, ids)] = again.failed_items.items()
        self.assertEqual((error.code, ids), (1905, {"etc/rules/new.xml"}))
        self.assertEqual(again.render()["message"], "Could not upload rule")
        self.assertEqual(self.env.read("etc/rules/new.xml"), RULE)
        self.env.call(rs.upload_rule_file, filename="new.xml", content="<a/>", overwrite=True)
        self.assertEqual(self.env.read("etc/rules/new.xml"), "<a/>")
        self.assertEqual([n for n in os.listdir(os.path.join(self.env.home, "etc", "rules"))
                          if n.startswith(".")], [])

    def test_upload_refusals(self) -> None:
        for kwargs, code in (
                ({"filename": "x.xml", "content": ""}, 1112),
                ({"filename": "x.xml", "content": "<a><b></a>"}, 1113),
                ({"filename": "../x.xml", "content": "<a/>"}, 1801),
                ({"filename": "..", "content": "<a/>"}, 1801),
                ({"filename": "x.xml", "content": "<a/>", "relative_dirname": "ruleset/rules"},
                 1210),
                ({"filename": "x.xml", "content": "<a/>", "relative_dirname": "../../tmp"}, 1209),
                ({"filename": "x.xml", "content": "<a/>", "relative_dirname": "etc/decoders"},
                 1209)):
            result = self.env.call(rs.upload_rule_file, **kwargs)
            self.assertEqual([e.code for e in result.failed_items], [code], kwargs)
            self.assertEqual(result.affected_items, [])
        self.assertFalse(self.env.exists("etc/x.xml"))

    def test_symlink_out_of_the_home_is_refused(self) -> None:
        outside = os.path.abspath(self.mktemp())
        with open(outside, "w") as f:
            f.write("<keep/>")
        os.symlink(outside, os.path.join(self.env.home, "etc", "rules", "evil.xml"))
        up = self.env.call(rs.upload_rule_file, filename="evil.xml", content="<a/>",
                           overwrite=True)
        self.assertEqual([e.code for e in up.failed_items], [1801])
        gone = self.env.call(rs.delete_rule_file, filename="evil.xml")
        self.assertEqual([e.code for e in gone.failed_items], [1801])
        with open(outside) as f:
            self.assertEqual(f.read(), "<keep/>")
        read = self.env.call(rs.get_rule_file, filename="evil.xml", raw=True)
        self.assertEqual([e.code for e in read.failed_items], [1414])

    def test_delete(self) -> None:
        result = self.env.call(rs.delete_rule_file, filename="local_rules.xml")
        self.assertEqual(result.affected_items, ["etc/rules/local_rules.xml"])
        self.assertEqual(result.render()["message"], "Rule was successfully deleted")
        self.assertFalse(self.env.exists("etc/rules/local_rules.xml"))
        again = self.env.call(rs.delete_rule_file, filename=["local_rules.xml"])
        self.assertEqual([e.code for e in again.failed_items], [1906])
        self.assertEqual(again.render()["message"], "Could not delete rule")
        stock = self.env.call(rs.delete_rule_file, filename="0010-rules_config.xml",
                              relative_dirname="ruleset/rules")
        self.assertEqual([e.code for e in stock.failed_items], [1210])
        self.assertTrue(self.env.exists("ruleset/rules/0010-rules_config.xml"))


class Decoders(Fixture):

    def test_list_get_upload_delete(self) -> None:
        files = self.env.call(rs.get_decoders_files)
        self.assertEqual([f["filename"] for f in files.affected_items],
                         ["0005-wazuh_decoders.xml", "local_decoder.xml"])
        self.assertEqual(files.render()["message"], "All decoder files were returned")
        got = self.env.call(rs.get_decoder_file, filename="local_decoder.xml")
        self.assertEqual(got.affected_items, [{"decoder": {"@name": "local"}}])
        self.assertEqual(got.render()["message"], "Selected decoder was returned")
        missing = self.env.call(rs.get_decoder_file, filename="x.xml")
        self.assertEqual([e.code for e in missing.failed_items], [1503])
        up = self.env.call(rs.upload_decoder_file, filename="d.xml", content="<decoder/>")
        self.assertEqual((up.affected_items, up.render()["message"]),
                         (["etc/decoders/d.xml"], "Decoder was successfully uploaded"))
        stock = self.env.call(rs.upload_decoder_file, filename="d.xml", content="<decoder/>",
                              relative_dirname="ruleset/decoders")
        self.assertEqual([e.code for e in stock.failed_items], [1506])
        gone = self.env.call(rs.delete_decoder_file, filename="d.xml")
        self.assertEqual(gone.render()["message"], "Decoder file was successfully deleted")
        self.assertFalse(self.env.exists("etc/decoders/d.xml"))

    def test_missing_user_dir(self) -> None:
        os.unlink(os.path.join(self.env.home, "etc", "decoders", "local_decoder.xml"))
        os.rmdir(os.path.join(self.env.home, "etc", "decoders"))
        up = self.env.call(rs.upload_decoder_file, filename="d.xml", content="<decoder/>")
        self.assertEqual([e.code for e in up.failed_items], [1507])


class Lists(Fixture):

    def test_paths_and_lists(self) -> None:
        paths = self.env.call(rs.get_path_lists)
        self.assertEqual(paths.affected_items, [
            {"relative_dirname": "etc/lists", "filename": "audit-keys"},
            {"relative_dirname": "etc/lists/sub", "filename": "blocked"}])
        lists = self.env.call(rs.get_lists, filename=["blocked"])
        self.assertEqual(lists.affected_items, [{
            "items": [{"key": "a:b", "value": "c"}, {"key": "plain", "value": "x"}],
            "relative_dirname": "etc/lists/sub", "filename": "blocked"}])
        self.assertEqual(lists.render()["message"], "All specified lists were returned")

    def test_get_file(self) -> None:
        got = self.env.call(rs.get_list_file, filename=["audit-keys"])
        self.assertEqual(got.affected_items, [{"key1": "value1", "key2": ""}])
        self.assertEqual(got.render()["message"], "CDB list was returned")
        self.assertEqual(self.env.call(rs.get_list_file, filename=["blocked"], raw=True),
                         '"a:b":"c"\nplain:x\n')
        missing = self.env.call(rs.get_list_file, filename=["nope"])
        self.assertEqual([e.code for e in missing.failed_items], [1802])

    def test_upload(self) -> None:
        up = self.env.call(rs.upload_list_file, filename="new", content="a:1\nb:2\n")
        self.assertEqual((up.affected_items, up.render()["message"]),
                         (["etc/lists/new"], "CDB list file uploaded successfully"))
        self.assertEqual(self.env.read("etc/lists/new"), "a:1\nb:2\n")
        for kwargs, code in (({"filename": "new", "content": "c:3"}, 1905),
                             ({"filename": "blocked", "content": "c:3"}, 1805),
                             ({"filename": "bad", "content": "no separator"}, 1800),
                             ({"filename": "empty", "content": ""}, 1112),
                             ({"filename": "../../x", "content": "a:1"}, 1801)):
            result = self.env.call(rs.upload_list_file, **kwargs)
            self.assertEqual([e.code for e in result.failed_items], [code], kwargs)
            self.assertEqual(result.render()["message"], "Could not upload CDB list file")
        self.env.call(rs.upload_list_file, filename="new", content="c:3", overwrite=True)
        self.assertEqual(self.env.read("etc/lists/new"), "c:3")

    def test_delete(self) -> None:
        result = self.env.call(rs.delete_list_file, filename=["audit-keys"])
        self.assertEqual(result.affected_items, ["etc/lists/audit-keys"])
        self.assertEqual(result.render()["message"], "CDB list file was successfully deleted")
        self.assertFalse(self.env.exists("etc/lists/audit-keys"))
        self.assertFalse(self.env.exists("etc/lists/audit-keys.cdb"))
        again = self.env.call(rs.delete_list_file, filename=["audit-keys"])
        self.assertEqual([e.code for e in again.failed_items], [1906])
        self.assertEqual(again.render()["message"], "Could not delete CDB list file")
