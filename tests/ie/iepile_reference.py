"""A faithful copy of IEPile's scorer, the oracle for knowlm's ``--count duplicates`` parity test.

Written from zjunlp/IEPile ``ie2instruction/eval_func.py``, ``eval/extracter/*.py`` and
``eval/metric/*.py`` (commit 933918d): same parsing, same list-based counting
(``match_mode="normal"``), same rounding. Left out: the ``print`` calls, the ROUGE half of
``Metric`` (``metrics_list="f1"`` is eval_func's default) and file output. One deliberate change:
``EETExtracter`` defines ``post_process4`` while ``Extracter.extract`` calls ``post_process``, so
the shipped EET evaluation stops with AttributeError; here ``extract`` calls ``post_process4``.
"""

import json
from collections import defaultdict
from copy import deepcopy

NER, RE, EE, EEA, EET, KG = "NER", "RE", "EE", "EEA", "EET", "KG"


class Extracter:
    def __init__(self, language="zh", NAN="NAN", prefix="", Reject=""):
        self.language, self.NAN, self.prefix, self.Reject = language, NAN, prefix, Reject

    def extract(self, output):
        return self.post_process(output)


class NERExtracter(Extracter):
    def post_process(self, result):
        try:
            rst = json.loads(result)
        except json.decoder.JSONDecodeError:
            return False, []
        if type(rst) != dict:
            return False, []
        new_record = []
        for key, values in rst.items():
            if type(key) != str or type(values) != list:
                continue
            for iit in values:
                if type(iit) != str:
                    continue
                new_record.append((iit, key))
        return True, new_record


class REExtracter(Extracter):
    def post_process(self, result):
        try:
            rst = json.loads(result)
        except json.decoder.JSONDecodeError:
            return False, []
        if type(rst) != dict:
            return False, []
        new_record = []
        for key, values in rst.items():
            if type(key) != str or type(values) != list:
                continue
            for iit in values:
                if type(iit) != dict:
                    continue
                head = iit.get("subject", "")
                tail = iit.get("object", "")
                if type(head) != str or type(tail) != str:
                    continue
                new_record.append((head, key, tail))
        return True, new_record


class EEExtracter(Extracter):
    def post_process(self, result):
        try:
            rst = json.loads(result)
        except json.decoder.JSONDecodeError:
            return False, []
        new_record = []
        if type(rst) != dict:
            return False, []
        for key, values in rst.items():
            if type(key) != str or type(values) != list:
                continue
            for value in values:
                if type(value) != dict:
                    continue
                trigger = value.get("trigger", "")
                if type(trigger) != str:
                    continue
                args = []
                arguments = value.get("arguments", {})
                for key1, value1 in arguments.items():
                    if type(value1) == list:
                        for iit in value1:
                            if iit == self.NAN:
                                continue
                            args.append((iit, key1))
                    else:
                        if value1 == self.NAN:
                            continue
                        args.append((value1, key1))
                new_record.append((key, trigger, tuple(args)))
        return True, new_record


class EEAExtracter(Extracter):
    def post_process(self, result):
        try:
            rst = json.loads(result)
        except json.decoder.JSONDecodeError:
            return False, []
        new_record = []
        if type(rst) != dict:
            return False, []
        for key, values in rst.items():
            if type(key) != str or type(values) != list:
                continue
            for value in values:
                if type(value) != dict:
                    continue
                args = []
                for key1, value1 in value.items():
                    if type(value1) == list:
                        for iit in value1:
                            if iit == self.NAN:
                                continue
                            args.append((iit, key1))
                    else:
                        if value1 == self.NAN:
                            continue
                        args.append((value1, key1))
                new_record.append((key, "", tuple(args)))
        return True, new_record


class EETExtracter(Extracter):
    def post_process4(self, result):
        try:
            rst = json.loads(result)
        except json.decoder.JSONDecodeError:
            return False, []
        if type(rst) != dict:
            return False, []
        new_record = []
        for key, values in rst.items():
            if type(key) != str or type(values) != list:
                continue
            for iit in values:
                if type(iit) != str:
                    continue
                new_record.append((iit, key))
        return True, new_record

    def extract(self, output):  # the deliberate change (see the module docstring)
        return self.post_process4(output)


class F1Metric:
    def __init__(self, match_mode="normal"):
        self.match_mode = match_mode
        self.f1_cnt = 0
        self.error = 0

    @staticmethod
    def safe_div(a, b):
        if b == 0.0:
            return 0.0
        else:
            return round(a / b * 100, 2)

    @staticmethod
    def safe_div_(a, b):
        if b == 0.0:
            return 0.0
        else:
            return round(a / b, 2)

    def count_error(self):
        self.error += 1


class NERMetric(F1Metric):  # REMetric is the same code
    def __init__(self, match_mode="normal"):
        super().__init__(match_mode)
        self.pred_num = 0
        self.gold_num = 0
        self.tp = 0

    def compute(self):
        result = {}
        result["总样本数"] = self.f1_cnt
        result["错误数"] = self.error
        result["P"] = self.safe_div(self.tp, self.pred_num)
        result["R"] = self.safe_div(self.tp, self.gold_num)
        result["F1"] = self.safe_div_(2 * result["P"] * result["R"], result["P"] + result["R"])
        return result

    def count_instance(self, gold_list, pred_list):
        self.f1_cnt += 1
        gold_list = [tuple(it) for it in gold_list]
        pred_list = [tuple(it) for it in pred_list]
        if self.match_mode == "set":
            gold_list = set(gold_list)
            pred_list = set(pred_list)
        dup_gold_list = deepcopy(gold_list)
        dup_pred_list = deepcopy(pred_list)
        self.pred_num += len(pred_list)
        self.gold_num += len(gold_list)
        for pred in pred_list:
            if pred in dup_gold_list:
                self.tp += 1
                dup_gold_list.remove(pred)
                dup_pred_list.remove(pred)


class EEMetric(F1Metric):
    def __init__(self, match_mode="normal"):
        super().__init__(match_mode)
        self.ee_tp = 0.0
        self.ee_gold_num = 0.0
        self.ee_pred_num = 0.0
        self.ag_tp = 0.0
        self.ag_gold_num = 0.0
        self.ag_pred_num = 0.0

    def compute(self):
        result = {}
        result["总样本数"] = self.f1_cnt
        result["错误数"] = self.error
        result["event_P"] = self.safe_div(self.ee_tp, self.ee_pred_num)
        result["event_R"] = self.safe_div(self.ee_tp, self.ee_gold_num)
        result["event_F1"] = self.safe_div_(2 * result["event_P"] * result["event_R"], result["event_P"] + result["event_R"])
        result["argument_P"] = self.safe_div(self.ag_tp, self.ag_pred_num)
        result["argument_R"] = self.safe_div(self.ag_tp, self.ag_gold_num)
        result["argument_F1"] = self.safe_div_(2 * result["argument_P"] * result["argument_R"], result["argument_P"] + result["argument_R"])
        return result

    def _count(self, gold_list, pred_list):
        gold_list = [tuple(it) for it in gold_list]
        pred_list = [tuple(it) for it in pred_list]
        if self.match_mode == "set":
            gold_list = set(gold_list)
            pred_list = set(pred_list)
        dup_gold_list = deepcopy(gold_list)
        tp = 0
        for pred in pred_list:
            if pred in dup_gold_list:
                tp += 1
                dup_gold_list.remove(pred)
        return tp, len(pred_list), len(gold_list)

    def count_instance(self, gold_list, pred_list):
        self.f1_cnt += 1
        gold_evt, pred_evt, gold_args, pred_args = [], [], [], []
        for evt_type, trigger, args in gold_list:
            gold_evt.append((evt_type, trigger))
            for name, stype in args:
                gold_args.append((evt_type, name, stype))
        for evt_type, trigger, args in pred_list:
            pred_evt.append((evt_type, trigger))
            for name, stype in args:
                pred_args.append((evt_type, name, stype))
        tp, p, g = self._count(gold_evt, pred_evt)
        self.ee_tp, self.ee_pred_num, self.ee_gold_num = self.ee_tp + tp, self.ee_pred_num + p, self.ee_gold_num + g
        tp, p, g = self._count(gold_args, pred_args)
        self.ag_tp, self.ag_pred_num, self.ag_gold_num = self.ag_tp + tp, self.ag_pred_num + p, self.ag_gold_num + g


EXTRACTERS = {NER: NERExtracter, RE: REExtracter, EE: EEExtracter, EEA: EEAExtracter, EET: EETExtracter}
METRICS = {NER: NERMetric, EET: NERMetric, RE: NERMetric, KG: NERMetric, EE: EEMetric, EEA: EEMetric}


def convert_kg(outputs, task):
    kgs = []
    if task == NER:
        for it in outputs:
            kgs.append((it["entity"], it["entity_type"]))
    elif task == RE or task == KG:
        for it in outputs:
            kgs.append((it.get("head", ""), it.get("relation", ""), it.get("tail", "")))
    elif task == EE:
        for it in outputs:
            args = []
            for arg in it["arguments"]:
                args.append((arg["argument"], arg["role"]))
            kgs.append((it["event_type"], it["event_trigger"], tuple(args)))
    elif task == EEA:
        for it in outputs:
            args = []
            for arg in it["arguments"]:
                args.append((arg["argument"], arg["role"]))
            kgs.append((it["event_type"], "", tuple(args)))
    elif task == EET:
        for it in outputs:
            kgs.append((it["event_trigger"], it["event_type"]))
    return kgs


def evaluate(path, task, sort_by="source", match_mode="normal"):
    """eval_func.evaluate: (all_result, total metric object)."""
    extracter = EXTRACTERS[task]()
    metric_class = METRICS[task]
    mapper = defaultdict(dict)
    with open(path, "r") as reader:
        for line in reader:
            data = json.loads(line)
            iid = data.get("source", "None") + data["id"]
            if iid in mapper:
                mapper[iid]["output"].append(data["output"])
            else:
                instr = json.loads(data["instruction"])
                inpt = instr["input"]
                mapper[iid] = {"output": [data["output"]], "label": json.loads(data["label"]), "source": data.get("source", "None"), "input": inpt}
    cate_dict = {}
    if sort_by != "":
        for cate in {record[sort_by] for record in mapper.values()}:
            cate_dict[cate] = metric_class(match_mode)
    total_counter = metric_class(match_mode)
    for value in mapper.values():
        converted_preds = []
        for it in value["output"]:
            flag, out_rst = extracter.extract(it)
            if not flag:
                if sort_by:
                    cate_dict[value[sort_by]].count_error()
                total_counter.count_error()
            converted_preds.extend(out_rst)
        label_kgs = convert_kg(value["label"], task)
        if sort_by:
            cate_dict[value[sort_by]].count_instance(label_kgs, converted_preds)
        total_counter.count_instance(label_kgs, converted_preds)
    all_result = {"total": total_counter.compute()}
    for key, counter in sorted(cate_dict.items()):
        all_result[key] = counter.compute()
    return all_result, total_counter
