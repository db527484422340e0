"""The academic report: figures, numbered tables, prose written from the run's numbers, rendering.

    plots        every figure of the notebooks and the report
    document     escaped data, numbered figures and tables (one header row), preformatted blocks, numbers in words
    render       the executed report notebook as HTML (nbconvert) and PDF (WeasyPrint)
    sections     the report's wording (HTML), from the run's artefacts
    data_prose   the words about the data: what the images show, class sizes, the audit's findings
    tables       the protocol as configured, the statistics, the methods, the steps: as tables
    references   the works a report cites
    run_comparison  the comparison page of finished runs (./compare_runs.sh, a sweep's page)
    report.css   the report's page style (HTML and PDF)
"""
