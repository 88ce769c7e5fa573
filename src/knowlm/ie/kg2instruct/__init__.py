"""KG2Instruction: relation-extraction training data from text plus a knowledge graph."""

from knowlm.ie.kg2instruct.build import DistantLabeller, KG2InstructConfig, kg2instruct, quality_check, split_of
from knowlm.ie.kg2instruct.graph import KnowledgeGraph, RelationSchema
from knowlm.ie.kg2instruct.mentions import MentionFinder
from knowlm.ie.kg2instruct.triples import RelationRule, load_rules

__all__ = ["kg2instruct", "KG2InstructConfig", "DistantLabeller", "KnowledgeGraph", "RelationSchema", "MentionFinder", "RelationRule", "load_rules", "quality_check", "split_of"]
