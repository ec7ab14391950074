"""Readers for the judged data sets in their native formats: BEIR directories (`beir`), claim-evidence pairs
(`claims`: HealthVer, SciFact, K-QA NLI, ExpertQA) and question sets (`qa`: PubMedQA, MIRAGE, K-QA). Each reader
names the file and the row of any problem.

May import: everything below it (`rag.answering` and down). Never training, evaluation or the CLI.
"""
