import { copyTour } from '../src/tour';

const nb = (name: string) => ({ name, content: { cells: [], metadata: { name }, nbformat: 4, nbformat_minor: 5 } });

function contents(existing: string[]) {
  const saved: { [path: string]: any } = {};
  return {
    saved,
    exists: async (path: string) => existing.includes(path) || path in saved,
    saveNotebook: async (path: string, content: any) => {
      saved[path] = content;
    }
  };
}

describe('copyTour', () => {
  const api = { tour: async () => ({ notebooks: [nb('00_quickstart.ipynb'), nb('01_data.ipynb'), nb('02_prompt_engineering.ipynb')] }) };

  it('copies every notebook of GET ftkit/api/tour into the folder and opens the quickstart', async () => {
    const files = contents([]);
    const result = await copyTour(api, files, 'work');
    expect(result).toEqual({
      open: 'work/00_quickstart.ipynb',
      copied: ['work/00_quickstart.ipynb', 'work/01_data.ipynb', 'work/02_prompt_engineering.ipynb'],
      kept: []
    });
    expect(files.saved['work/01_data.ipynb'].metadata.name).toBe('01_data.ipynb');
  });

  it('never overwrites a notebook already there (it may hold the learner\'s edits)', async () => {
    const files = contents(['00_quickstart.ipynb']);
    const result = await copyTour(api, files, '');
    expect(result.kept).toEqual(['00_quickstart.ipynb']);
    expect(result.copied).toEqual(['01_data.ipynb', '02_prompt_engineering.ipynb']);
    expect(Object.keys(files.saved)).not.toContain('00_quickstart.ipynb');
    expect(result.open).toBe('00_quickstart.ipynb');
  });

  it('writes a name with a path in it into the folder itself', async () => {
    const files = contents([]);
    const result = await copyTour({ tour: async () => ({ notebooks: [nb('../../etc/00_quickstart.ipynb')] }) }, files, 'f');
    expect(result.copied).toEqual(['f/00_quickstart.ipynb']);
  });

  it('says so when the server lists no notebooks', async () => {
    await expect(copyTour({ tour: async () => ({ notebooks: [] }) }, contents([]), '')).rejects.toThrow(
      'listed no tour notebooks'
    );
  });
});
