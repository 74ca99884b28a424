from rmcli.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports it in a Dask worker
    main()
